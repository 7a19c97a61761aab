#!/usr/bin/env bash
# Proves the container image works without a Docker engine or a registry:
# builds a static binary on this machine, builds the Dockerfile's final stage
# from it with buildah (scratch base, so nothing is pulled), runs it with podman
# read-only as a non-root user with the example config pointed at a local
# self-signed HTTPS server, and checks /readyz, the image's HEALTHCHECK, a pinned request (by IP and by
# a host name, which the static binary must resolve inside scratch), the user,
# and a clean exit on SIGTERM; then builds the same stage for linux/arm64 from a
# cross-built static binary and puts both under one multi-arch tag (a manifest list).
#
#   sudo bash deploy/container-check.sh        (needs buildah, podman, runc, openssl, curl)
#
# Flags are the ones that work on machines without a full container setup:
# vfs storage, chroot isolation, runc, cgroupfs, host network, explicit ulimits.
set -euo pipefail

cd "$(dirname "$0")/.."
for tool in buildah podman runc openssl curl python3 cargo rustc; do
    command -v "$tool" > /dev/null || { echo "container-check: $tool is missing (apt-get install buildah podman runc openssl curl)" >&2; exit 1; }
done

image=localhost/pinproxy:check
name=pinproxy-check-$$
work=$(mktemp -d)
storage=(--storage-driver vfs)
podman=(podman "${storage[@]}" --cgroup-manager=cgroupfs --runtime runc)
ulimits=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
server_pid=

cleanup() {
    "${podman[@]}" rm -f "$name" > /dev/null 2>&1 || true
    [ -n "$server_pid" ] && kill "$server_pid" 2> /dev/null || true
    buildah "${storage[@]}" rmi -f "$image" > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "static binary"
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target"
binary=target/$target/release/pinproxy
if ldd "$binary" 2>&1 | grep -q '=>'; then
    echo "container-check: $binary is dynamically linked" >&2
    exit 1
fi
ls -l "$binary"

step "final stage of deploy/Dockerfile, from that binary"
mkdir -p "$work/context"
# Stripped, as the Dockerfile's build stage does (install -s).
strip -o "$work/context/pinproxy" "$binary"
# Everything from the last FROM on, with the one COPY --from=build taken from the context instead.
awk '/^FROM /{stage=""} {stage=stage $0 "\n"} END{printf "%s", stage}' deploy/Dockerfile > "$work/final.stage"
grep -q '^FROM scratch' "$work/final.stage" || { echo "container-check: the final stage is not FROM scratch" >&2; exit 1; }
[ "$(grep -c '^COPY --from=build /out/pinproxy /pinproxy$' "$work/final.stage")" = 1 ] \
    || { echo "container-check: expected exactly one 'COPY --from=build /out/pinproxy /pinproxy' in the final stage" >&2; exit 1; }
sed 's|^COPY --from=build /out/pinproxy /pinproxy$|COPY pinproxy /pinproxy|' "$work/final.stage" > "$work/Containerfile"
cat "$work/Containerfile"
buildah "${storage[@]}" build --format docker --isolation chroot "${ulimits[@]}" -f "$work/Containerfile" -t "$image" "$work/context"
"${podman[@]}" images "$image"
source_label=$("${podman[@]}" image inspect --format '{{index .Labels "org.opencontainers.image.source"}}' "$image")
[ "$source_label" = "https://github.com/pinproxy/pinproxy" ] \
    || { echo "container-check: OCI label org.opencontainers.image.source is '$source_label'" >&2; exit 1; }

step "a self-signed HTTPS upstream and the example config pointed at it"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mgmt.check.test \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2> /dev/null
upstream_port=$(free_port)
openssl s_server -accept "127.0.0.1:$upstream_port" -cert "$work/cert.pem" -key "$work/key.pem" -www -quiet \
    > /dev/null 2>&1 &
server_pid=$!
sha1=$(openssl x509 -in "$work/cert.pem" -noout -fingerprint -sha1 | cut -d= -f2)
listen_port=$(free_port)
named_port=$(free_port)
admin_port=$(free_port)
mkdir -p "$work/etc"
sed -e "s|^listen = \"127.0.0.1:8443\"|listen = \"127.0.0.1:$listen_port\"|" \
    -e "s|^listen = \"127.0.0.1:9901\"|listen = \"127.0.0.1:$admin_port\"|" \
    -e "s|^address = \"192.0.2.10:443\"|address = \"127.0.0.1:$upstream_port\"|" \
    -e "s|\"SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D\"|\"SHA1: $sha1\"|" \
    proxy.example.toml > "$work/etc/proxy.toml"
cat >> "$work/etc/proxy.toml" << EOF

[[upstream]]
name = "by-name"
listen = "127.0.0.1:$named_port"
address = "mgmt.check.test:$upstream_port"
fingerprints = ["SHA1: $sha1"]
EOF
chmod 0755 "$work/etc" && chmod 0644 "$work/etc/proxy.toml"
grep -q "$upstream_port" "$work/etc/proxy.toml" && grep -q "$sha1" "$work/etc/proxy.toml" \
    || { echo "container-check: proxy.example.toml no longer has the lines this script rewrites" >&2; exit 1; }

step "run it read-only, as 65532, with the image's own command"
"${podman[@]}" run -d --name "$name" --network=host --read-only "${ulimits[@]}" \
    --add-host "mgmt.check.test:127.0.0.1" \
    -v "$work/etc:/etc/pinproxy:ro" "$image" > /dev/null
ready=
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$admin_port/readyz" > /dev/null 2>&1; then ready=yes; break; fi
    [ "$("${podman[@]}" inspect -f '{{.State.Running}}' "$name")" = true ] || break
    sleep 0.1
done
if [ -z "$ready" ]; then
    "${podman[@]}" logs "$name" >&2 || true
    echo "container-check: /readyz never answered 200" >&2
    exit 1
fi
echo "/readyz: $(curl -fsS "http://127.0.0.1:$admin_port/readyz")"
# The image's HEALTHCHECK (pinproxy health, inside scratch) says healthy; podman
# refuses to run it if the image has none.
"${podman[@]}" healthcheck run "$name" || { "${podman[@]}" logs "$name" >&2; echo "container-check: the HEALTHCHECK failed" >&2; exit 1; }
echo "HEALTHCHECK: $("${podman[@]}" exec "$name" /pinproxy health --config /etc/pinproxy/proxy.toml)"

fail() { "${podman[@]}" logs "$name" >&2 || true; echo "container-check: $*" >&2; exit 1; }
status=$(curl -sS -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$listen_port/")
[ "$status" = 200 ] && grep -q 's_server' "$work/body" || fail "request by IP: HTTP $status, $(head -c 300 "$work/body")"
echo "request through the container (upstream by IP): HTTP $status"
status=$(curl -sS -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$named_port/")
[ "$status" = 200 ] || fail "request by host name: HTTP $status, $(head -c 300 "$work/body")"
echo "request through the container (upstream by host name): HTTP $status"

pid=$("${podman[@]}" inspect -f '{{.State.Pid}}' "$name")
uid=$(stat -c %u "/proc/$pid")
[ "$uid" = 65532 ] || fail "runs as uid $uid, not 65532"
[ "$("${podman[@]}" inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$name")" = true ] || fail "root filesystem is writable"
echo "process uid $uid, read-only root filesystem"
curl -fsS "http://127.0.0.1:$admin_port/metrics" | grep '^pinproxy_requests_total{.*class="2xx"} [1-9]' \
    || fail "/metrics does not show the requests"

"${podman[@]}" stop -t 20 "$name" > /dev/null
code=$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
"${podman[@]}" logs "$name" | tail -n 3

step "arm64 image (cross-built static binary) and one multi-arch tag for both"
# The same final stage for linux/arm64: it only copies the binary, so nothing
# is emulated. Running it needs an arm64 machine (or binfmt_misc, which this
# machine lacks); deploy/arm64-check.sh runs the same binary under qemu-user.
arm_target=aarch64-unknown-linux-gnu
command -v aarch64-linux-gnu-gcc > /dev/null || { echo "container-check: aarch64-linux-gnu-gcc is missing (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)" >&2; exit 1; }
rustup target list --installed | grep -qx "$arm_target" || rustup target add "$arm_target"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$arm_target"
mkdir -p "$work/arm64"
aarch64-linux-gnu-strip -o "$work/arm64/pinproxy" "target/$arm_target/release/pinproxy"
file "$work/arm64/pinproxy" | grep -q 'ARM aarch64.*statically linked' || fail "the arm64 binary is not static: $(file "$work/arm64/pinproxy")"
if command -v qemu-aarch64-static > /dev/null; then qemu-aarch64-static "$work/arm64/pinproxy" --version; fi
arm_image=localhost/pinproxy:check-arm64
multi=localhost/pinproxy:check-multi
buildah "${storage[@]}" build --format docker --isolation chroot "${ulimits[@]}" --platform linux/arm64 \
    -f "$work/Containerfile" -t "$arm_image" "$work/arm64"
buildah "${storage[@]}" manifest create "$multi" > /dev/null
buildah "${storage[@]}" manifest add "$multi" "$image" > /dev/null
buildah "${storage[@]}" manifest add "$multi" "$arm_image" > /dev/null
platforms=$(buildah "${storage[@]}" manifest inspect "$multi" \
    | python3 -c 'import json,sys; print(" ".join(sorted(m["platform"]["os"] + "/" + m["platform"]["architecture"] for m in json.load(sys.stdin)["manifests"])))')
[ "$platforms" = "linux/amd64 linux/arm64" ] || fail "the multi-arch tag lists: $platforms"
echo "one tag, $multi: $platforms"
arm_copy=$(buildah "${storage[@]}" from "$arm_image")
arm_root=$(buildah "${storage[@]}" mount "$arm_copy")
file "$arm_root/pinproxy" | grep -q 'ARM aarch64' || fail "the arm64 image holds $(file "$arm_root/pinproxy")"
buildah "${storage[@]}" umount "$arm_copy" > /dev/null
buildah "${storage[@]}" rm "$arm_copy" > /dev/null
buildah "${storage[@]}" manifest rm "$multi" > /dev/null 2>&1 || true
buildah "${storage[@]}" rmi -f "$arm_image" > /dev/null 2>&1 || true
echo
echo "container-check: ok (image $("${podman[@]}" images --format '{{.Size}}' "$image"))"
