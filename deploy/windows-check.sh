#!/usr/bin/env bash
# Windows: cross-builds pinproxy.exe for x86_64-pc-windows-gnu with Debian's
# mingw-w64 gcc, runs it under Wine (Debian's wine64, with the stand-in
# bcryptprimitives.dll from ../shared/tools/wine-bcryptprimitives that Rust's
# std needs and Wine 8 lacks), and checks it the way a Windows user meets it:
#   1. the release .exe serves a pinned request from a Linux curl to the
#      listener it opened on 127.0.0.1, and refuses a server whose certificate
#      matches no pin (502 fingerprint-mismatch);
#   2. `pinproxy.exe service install|start|reload|stop|uninstall` against
#      Wine's service control manager, the service serving requests while it
#      runs and taking an edited config on `service reload`;
#   3. the test suites that need no Unix tool, under Wine as cargo's runner:
#      the library's tests, the request path (proxy.rs), the pool, failover,
#      faults, upstream protocols (h2), WebSocket, smuggling, reload and pin
#      paths. The others start Unix programs (curl, openssl, kill for
#      signals, setpriv) from the test process, which Wine cannot run with
#      pipes; README "On Windows" lists what was verified where.
# Needs root for apt-get.   bash deploy/windows-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu
shared=$(cd .. && pwd)/shared/tools/wine-bcryptprimitives

need=()
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
[ -x /usr/lib/wine/wine64 ] || need+=(wine64)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

wine=/usr/lib/wine/wine64
work=$(mktemp -d)
# A fresh prefix is ~700 MB: inside $work, so cleanup removes it.
export WINEPREFIX=${WINEPREFIX:-$work/wineprefix} WINEDEBUG=-all
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=$wine
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    "$wine" "$work/pinproxy.exe" service uninstall >/dev/null 2>&1 || true
    /usr/lib/wine/wineserver -k 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { echo "windows-check: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL: until anything answers, at most 60 s (Wine's first start is slow)
    for _ in $(seq 1 600); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
    return 1
}

started=$(date +%s)
# The Windows-only code (service, accounts, TCP owners) is linted like the rest.
step "clippy for $target"
cargo clippy --locked --target "$target" --all-targets -- -D warnings
step "release build for $target"
cargo build --release --locked --target "$target"
exe=target/$target/release/pinproxy.exe
file "$exe" | grep -q 'PE32+ executable.*x86-64' || fail "$exe is not a Windows x86-64 executable"
cp "$exe" "$work/pinproxy.exe"
bash "$shared/build.sh" "$work" >/dev/null
"$wine" "$work/pinproxy.exe" --version
built=$(date +%s)

step "a Linux curl through pinproxy.exe to a self-signed server"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mgmt.windows.test \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
upstream=$(free_port)
openssl s_server -accept "127.0.0.1:$upstream" -cert "$work/cert.pem" -key "$work/key.pem" -www -quiet \
    >/dev/null 2>&1 &
pids+=($!)
sha1=$(openssl x509 -in "$work/cert.pem" -noout -fingerprint -sha1 | cut -d= -f2)
listen=$(free_port)
wrong=$(free_port)
"$wine" "$work/pinproxy.exe" run --listen "127.0.0.1:$listen" --upstream "127.0.0.1:$upstream" \
    --fingerprint "SHA1: $sha1" > "$work/run.log" 2>&1 &
pids+=($!)
"$wine" "$work/pinproxy.exe" run --listen "127.0.0.1:$wrong" --upstream "127.0.0.1:$upstream" \
    --fingerprint "SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D" > "$work/wrong.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$listen/" || { cat "$work/run.log"; fail "pinproxy.exe never listened"; }
status=$(curl -sS -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$listen/")
[ "$status" = 200 ] && grep -q s_server "$work/body" || { cat "$work/run.log"; fail "pinned request: HTTP $status"; }
echo "pinned request: HTTP $status"
wait_http "http://127.0.0.1:$wrong/" || { cat "$work/wrong.log"; fail "the second pinproxy.exe never listened"; }
headers=$(curl -sS -D - -o /dev/null "http://127.0.0.1:$wrong/")
echo "$headers" | grep -q '^HTTP/1.1 502' && echo "$headers" | grep -qi '^x-pinproxy-error: fingerprint-mismatch' \
    || fail "a server matching no pin was not refused: $headers"
echo "server matching no pin: 502 fingerprint-mismatch"
status=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Host: evil.example' "http://127.0.0.1:$listen/")
[ "$status" = 403 ] || fail "a foreign Host got HTTP $status, not 403"
echo "foreign Host header: HTTP $status"
# allowed_users: the account of the process that owns the client socket. Wine
# lists connections with owning process 0 (it keeps no owners), so under Wine
# every owner is unknown and must be refused; on Windows the same lookup names
# the account (src/platform/windows).
users_port=$(free_port)
cat > "$work/users.toml" <<TOML
[[upstream]]
name = "gaia"
listen = "127.0.0.1:$users_port"
address = "127.0.0.1:$upstream"
fingerprints = ["SHA1: $sha1"]
allowed_users = ["S-1-5-18"]
TOML
"$wine" "$work/pinproxy.exe" check --config "Z:${work//\//\\}\\users.toml" >/dev/null
"$wine" "$work/pinproxy.exe" run --config "Z:${work//\//\\}\\users.toml" > "$work/users.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$users_port/" || { cat "$work/users.log"; fail "the allowed_users listener never answered"; }
headers=$(curl -sS -D - -o "$work/body" "http://127.0.0.1:$users_port/")
echo "$headers" | grep -q '^HTTP/1.1 403' && echo "$headers" | grep -qi '^x-pinproxy-error: user-not-allowed' \
    && grep -q 'an unknown user' "$work/body" || fail "a client whose owner is unknown was not refused: $headers"
echo "allowed_users, owner unknown (Wine): 403 user-not-allowed"

step "pinproxy.exe as a service of Wine's service control manager"
service_port=$(free_port)
admin_port=$(free_port)
cat > "$work/proxy.toml" <<TOML
[[upstream]]
name = "gaia"
listen = "127.0.0.1:$service_port"
address = "127.0.0.1:$upstream"
fingerprints = ["SHA1: $sha1"]

[admin]
listen = "127.0.0.1:$admin_port"
TOML
config="Z:${work//\//\\}\\proxy.toml"
"$wine" "$work/pinproxy.exe" service install --config "$config"
"$wine" "$work/pinproxy.exe" service start
curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null || fail "the service is running but /readyz does not answer"
status=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$service_port/")
[ "$status" = 200 ] || fail "request through the service: HTTP $status"
echo "request through the service: HTTP $status"
# process_* from Windows' own counters (working set, CPU time).
metrics=$(curl -fsS "http://127.0.0.1:$admin_port/metrics")
echo "$metrics" | grep -Eq '^process_resident_memory_bytes [1-9]' && echo "$metrics" | grep -Eq '^process_cpu_seconds_total [0-9.e+-]+$' \
    || fail "the service's metrics lack process_* values: $(echo "$metrics" | grep '^process_')"
echo "service metrics: $(echo "$metrics" | grep '^process_resident_memory_bytes')"
# A reload through the service control manager (pinproxy service reload):
# the edited config's new port serves, the old one is closed.
moved=$(free_port)
sed -i "s/^listen = \"127.0.0.1:$service_port\"/listen = \"127.0.0.1:$moved\"/" "$work/proxy.toml"
"$wine" "$work/pinproxy.exe" service reload
wait_http "http://127.0.0.1:$moved/" || { cat "$work/pinproxy.log"; fail "the reloaded config's listener never answered"; }
grep -q 'config reloaded' "$work/pinproxy.log" || { cat "$work/pinproxy.log"; fail "the log does not show the reload"; }
echo "after service reload: the new listener answers"
service_port=$moved
"$wine" "$work/pinproxy.exe" service stop
curl -s -o /dev/null "http://127.0.0.1:$service_port/" && fail "the service still answers after stop"
grep -q 'shutting down' "$work/pinproxy.log" || { cat "$work/pinproxy.log"; fail "the service log does not show a graceful stop"; }
"$wine" "$work/pinproxy.exe" service uninstall
echo "service log ($work/pinproxy.log), last lines:"
tail -n 3 "$work/pinproxy.log"
checked=$(date +%s)

step "test suites under Wine"
cargo build --locked --target "$target"
for dir in target/$target/debug target/$target/debug/deps; do bash "$shared/build.sh" "$dir" >/dev/null; done
cargo test --locked --target "$target" --lib --test proxy --test pool --test failover --test faults \
    --test upstream_protocols --test websocket --test smuggling --test reload --test pin_paths
echo "windows-check: ok (release build $((built - started)) s, .exe and service checks $((checked - built)) s, tests under Wine $(($(date +%s) - checked)) s)"
