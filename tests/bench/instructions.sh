#!/usr/bin/env bash
# User-space instructions per request of one pinproxy build, counted by
# valgrind's callgrind in front of nginx as a self-signed HTTPS upstream (as in
# mem.sh): wrk -t1 -c8 for DURATION with keep-alive, then with a new client
# connection per request, the counters zeroed after a warm-up and dumped after
# the load. Unlike CPU time on a shared VM (±10% between identical runs), the
# count moves by well under 1% between runs of one build, so it shows a change
# of a few percent in pinproxy's own work; the kernel's share (system calls,
# TCP, scheduling) is not in it. Keeps the dumps as $OUT-keep-alive.out and
# $OUT-close.out for callgrind_annotate. `nginx` instead of a build counts nginx
# as the proxy (configured as in run.sh, one worker and no master process, so
# that callgrind follows the one process that does the work; no access log).
#   bash tests/bench/instructions.sh target/release/pinproxy
#   OUT=/tmp/old bash tests/bench/instructions.sh /tmp/old/pinproxy
#   OUT=/tmp/nginx bash tests/bench/instructions.sh nginx
set -euo pipefail
TARGET=${1:?usage: instructions.sh PATH-TO-PINPROXY or nginx}
# pinned_nginx.sh starts a pinproxy build; for nginx's count any will do.
BIN=$TARGET
[ "$TARGET" = nginx ] && BIN=${PINPROXY:-$(dirname "$0")/../../target/release/pinproxy}
DURATION=${DURATION:-8}
OUT=${OUT:-/tmp/pinproxy-callgrind}
PORT=${PORT:-19003}
UP=${UP_PORT:-19445}
for tool in nginx wrk openssl curl valgrind callgrind_control; do
    command -v "$tool" >/dev/null || { echo "instructions: install $tool (apt-get install nginx wrk openssl curl valgrind)" >&2; exit 1; }
done
. "$(dirname "$0")/pinned_nginx.sh"
# pinned_nginx.sh started the build natively; this one runs it under callgrind.
kill "$pid"
wait "$pid" 2>/dev/null || true
if [ "$TARGET" = nginx ]; then
    nginx_proxy_conf "$W/proxy.conf" "$PORT" "master_process off; worker_processes 1;"
    valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.%p" \
        nginx -c "$W/proxy.conf" -p "$W" >"$W/proxy.log" 2>&1 &
else
    valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.%p" \
        "$BIN" run --config "$W/pinproxy.toml" >"$W/pinproxy.log" 2>&1 &
fi
pid=$!
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$PORT/small" && break; sleep 0.2; done
for mode in keep-alive close; do
    header=()
    [ "$mode" = close ] && header=(-H "Connection: close")
    wrk -t1 -c8 -d2s "${header[@]}" "http://127.0.0.1:$PORT/small" >/dev/null
    callgrind_control --zero "$pid" >/dev/null 2>&1
    out=$(wrk -t1 -c8 -d"${DURATION}s" "${header[@]}" "http://127.0.0.1:$PORT/small")
    callgrind_control --dump "$pid" >/dev/null 2>&1
    requests=$(awk '/requests in/ { print $1 }' <<<"$out")
    dump=$(ls -t "$W"/callgrind."$pid".* | head -n 1)
    instructions=$(awk '/^summary:|^totals:/ { print $2; exit }' "$dump")
    cp "$dump" "$OUT-$mode.out"
    echo "$mode: $((instructions / requests)) instructions per request ($requests requests; $OUT-$mode.out)"
done
