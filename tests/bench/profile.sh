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
. "$(dirname "$0")/pinned_nginx.sh"
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
