#!/usr/bin/env bash
# arm64: cross-builds pinproxy for aarch64-unknown-linux-gnu with Debian's cross
# gcc (no emulated build), checks the release binary runs under qemu-user,
# builds the arm64 .deb (deploy/debian/build.sh --target) and checks it, and
# runs a subset of the tests under qemu-aarch64-static as cargo's runner: the
# library's own tests, the request path (tests/proxy.rs: pinned requests,
# mismatches, the handshake signature), the Host/Origin checks
# (tests/access.rs) and the service with its admin endpoint (tests/service.rs).
# The netlink owner lookup is not emulated by qemu-user (see below).
# The built binary is started through the same runner (PINPROXY_TEST_RUNNER),
# since this kernel has no binfmt_misc entry for aarch64. Needs root for apt-get.
#   bash deploy/arm64-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

runner="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$runner"
export PINPROXY_TEST_RUNNER="$runner"

started=$(date +%s)
cargo build --release --locked --target "$target"
binary="target/$target/release/pinproxy"
file "$binary" | grep -q 'ARM aarch64' || { echo "arm64-check: $binary is not an aarch64 binary" >&2; exit 1; }
$runner "$binary" --version
built=$(date +%s)

# The arm64 .deb from the same script as the amd64 one: its control file says
# arm64, its dependencies come from the arm64 binary, and the binary in it runs.
bash deploy/debian/build.sh --target "$target"
deb=$(ls -t target/$target/debian/pinproxy_*_arm64.deb | head -n 1)
dpkg-deb -f "$deb" Architecture | grep -qx arm64 || { echo "arm64-check: $deb is not Architecture: arm64" >&2; exit 1; }
dpkg-deb -f "$deb" Depends | grep -q 'libc6' || { echo "arm64-check: $deb does not depend on libc6: $(dpkg-deb -f "$deb" Depends)" >&2; exit 1; }
unpacked=$(mktemp -d)
dpkg-deb -x "$deb" "$unpacked"
file "$unpacked/usr/bin/pinproxy" | grep -q 'ARM aarch64' || { echo "arm64-check: the .deb holds $(file "$unpacked/usr/bin/pinproxy")" >&2; exit 1; }
$runner "$unpacked/usr/bin/pinproxy" check --config "$unpacked/etc/pinproxy/proxy.toml" > /dev/null
[ -f "$unpacked/usr/share/man/man1/pinproxy.1.gz" ] || { echo "arm64-check: no man page in $deb" >&2; exit 1; }
rm -rf "$unpacked"
echo "arm64 .deb: $deb ($(dpkg-deb -f "$deb" Depends))"
packaged=$(date +%s)
# qemu-user does not emulate netlink sock_diag: the tests of that lookup are
# left out here; the /proc/net/tcp fallback pinproxy uses without it is what
# access.rs's allowed_users tests exercise under qemu.
cargo test --locked --target "$target" --lib --test proxy --test access --test service \
    -- --skip platform::peer::tests
echo "arm64-check: ok (release build $((built - started)) s, .deb $((packaged - built)) s, tests under qemu $(($(date +%s) - packaged)) s)"
