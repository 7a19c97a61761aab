//! Build script: how the `pinproxy` binary is linked, nothing else.
//!
//! On Linux with glibc 2.36 or newer, relative relocations are packed
//! (`-z pack-relative-relocs`, `DT_RELR`). There were ~12,000 of them, 293 KB
//! of `.rela.dyn` that the loader read at every start and whose pages then
//! stayed resident: the mapping that held them is 0.2-0.3 MiB smaller in RSS
//! (docs/benchmark.md, fourteenth round). The binary stays
//! position-independent, static ones included.
//!
//! Such a binary needs glibc 2.36 at run time (the linker records it as the
//! version `GLIBC_ABI_DT_RELR`, so an older glibc refuses it at start, and the
//! .deb's `dpkg-shlibdeps` dependency says so). Built where glibc is older
//! (Ubuntu 22.04: 2.35; RHEL 9: 2.34), the option is left out and the binary
//! runs there. The build machine's glibc stands for the target's, which a
//! distribution's cross toolchains match. GNU ld older than 2.38 ignores the
//! option with a warning.

use std::process::Command;

/// The first glibc that reads packed relocations.
const RELR_SINCE: (u32, u32) = (2, 36);

fn main() {
    println!("cargo:rerun-if-changed=deploy/link.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && host_glibc().is_some_and(|v| v >= RELR_SINCE) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// This machine's glibc as (major, minor), from `getconf GNU_LIBC_VERSION`
/// ("glibc 2.36"); `None` when it cannot tell.
fn host_glibc() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.trim().strip_prefix("glibc ")?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
