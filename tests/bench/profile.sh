#!/usr/bin/env bash
# Where one pinproxy build spends its CPU: in front of nginx as a self-signed
# HTTPS upstream (as in mem.sh), wrk -t2 -c64 for DURATION with keep-alive
# (CLOSE=1: a new client connection per request), sampled with `perf record -e
# cpu-clock` (hardware counters are not available on every VM). Prints the CPU
# ticks per 100k requests, the share of each part (kernel, crypto, hyper, tokio,
# allocator and copies, pinproxy's own code, the rest) and the TOP hottest symbols.
#   bash tests/bench/profile.sh target/release/pinproxy
#   CLOSE=1 TOP=30 bash tests/bench/profile.sh /tmp/old/pinproxy
set -euo pipefail
BIN=${1:?usage: profile.sh PATH-TO-PINPROXY}
DURATION=${DURATION:-5}
CLOSE=${CLOSE:-0}
TOP=${TOP:-20}
PORT=${PORT:-19002}
UP=${UP_PORT:-19444}
for tool in nginx wrk openssl curl perf python3; do
    command -v "$tool" >/dev/null || { echo "profile: install $tool (apt-get install nginx wrk openssl curl linux-perf python3)" >&2; exit 1; }
done
W=$(mktemp -d /tmp/pinproxy-profile.XXXXXX)
chmod 755 "$W"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -f "$W/up.pid" ] && kill "$(cat "$W/up.pid")" 2>/dev/null; rm -rf "$W"' EXIT

mkdir -p "$W/www" "$W/tmp"
chmod 1777 "$W/tmp"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
head -c 1200 /dev/urandom | base64 -w 76 >"$W/www/small"
cat >"$W/up.conf" <<C
daemon on;
worker_processes auto;
pid $W/up.pid;
error_log $W/up.err warn;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s; client_body_temp_path $W/tmp;
  server { listen 127.0.0.1:$UP ssl reuseport; ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
           root $W/www; location = /small { default_type application/json; } } }
C
nginx -c "$W/up.conf" -p "$W"
cat >"$W/pinproxy.toml" <<C
[[upstream]]
name = "bench"
listen = "127.0.0.1:$PORT"
address = "127.0.0.1:$UP"
fingerprints = ["$(openssl x509 -in "$W/cert.pem" -noout -fingerprint -sha1 | cut -d= -f2)"]
C
RUST_LOG=warn "$BIN" run --config "$W/pinproxy.toml" >"$W/pinproxy.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/small" && break; sleep 0.1; done
header=()
[ "$CLOSE" = 1 ] && header=(-H "Connection: close")
wrk -t2 -c64 -d2s "${header[@]}" "http://127.0.0.1:$PORT/small" >/dev/null # warm the pool
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"; }
before=$(ticks)
perf record -q -e cpu-clock -F 2999 -p "$pid" -o "$W/perf.data" -- sleep "$DURATION" 2>/dev/null &
perf_pid=$!
out=$(wrk -t2 -c64 -d"${DURATION}s" "${header[@]}" "http://127.0.0.1:$PORT/small")
wait "$perf_pid"
after=$(ticks)
requests=$(awk '/requests in/ { print $1 }' <<<"$out")
echo "$([ "$CLOSE" = 1 ] && echo "connection per request" || echo keep-alive): $(awk '/Requests\/sec/ { print $2 }' <<<"$out") req/s, $(((after - before) * 100000 / requests)) CPU ticks per 100k requests"
perf report -i "$W/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
    python3 "$(dirname "$0")/profile_parts.py" "$TOP"
