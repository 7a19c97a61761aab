#!/usr/bin/env bash
# Builds the Debian package: target/debian/pinproxy_<version>-1_<arch>.deb
# (needs cargo-deb: `cargo install cargo-deb --locked`; installed here if missing).
#
#   bash deploy/debian/build.sh                                    # this machine's architecture
#   bash deploy/debian/build.sh --target aarch64-unknown-linux-gnu # arm64, cross-built
#     (needs gcc-aarch64-linux-gnu and libc6-dev-arm64-cross; the package is
#      target/aarch64-unknown-linux-gnu/debian/pinproxy_<version>-1_arm64.deb)
#
# What cargo-deb packages (see [package.metadata.deb] in Cargo.toml) is made
# here first, from the built binary, so it never drifts from it:
# - the man pages (pinproxy(1), one per subcommand, pinproxy.toml(5): `pinproxy man --dir`)
#   and the bash/zsh/fish completions (
#   `pinproxy completions SHELL`, generated from the same clap definitions as --help);
# - the unit: deploy/systemd/pinproxy.service with ExecStart=/usr/bin/pinproxy, and
#   the socket unit as it is; the system user from pinproxy.sysusers.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=
if [ "${1:-}" = --target ]; then
    target=${2:?--target needs a Rust target triple}
fi

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version '^3'
# The man pages and completions come from a binary this machine runs; they are
# the same for every architecture.
cargo build --release --locked
binary=target/release/pinproxy
deb_args=()
if [ -n "$target" ]; then
    case "$target" in
        aarch64-unknown-linux-gnu)
            export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
            export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc ;;
    esac
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    cargo build --release --locked --target "$target"
    deb_args=(--target "$target")
fi

assets=target/debian-assets
units=target/debian-units
rm -rf "$assets" "$units"
mkdir -p "$assets" "$units"
"$binary" man --dir "$assets/man" >/dev/null
gzip -9n "$assets"/man/*
for shell in bash zsh fish; do
    "$binary" completions "$shell" > "$assets/pinproxy.$shell"
done
{
    echo "# pinproxy's unit, as installed by its Debian package (/usr/bin/pinproxy, system user"
    echo "# pinproxy from /usr/lib/sysusers.d/pinproxy.conf). Not enabled on install: edit"
    echo "# /etc/pinproxy/proxy.toml, then: systemctl enable --now pinproxy"
    sed -e '1,/^\[Unit\]/{/^\[Unit\]/!d}' -e 's#/usr/local/bin/pinproxy#/usr/bin/pinproxy#g' \
        deploy/systemd/pinproxy.service
} > "$units/pinproxy.service"
grep -q '^ExecStart=/usr/bin/pinproxy ' "$units/pinproxy.service"
cp deploy/systemd/pinproxy.socket "$units/pinproxy.socket"
cp deploy/debian/pinproxy.sysusers "$units/pinproxy.sysusers"

cargo deb --no-build --locked "${deb_args[@]}"
