#!/usr/bin/env bash
# Where each proxy's CPU goes, user space or kernel: pinproxy builds (and
# `nginx`, configured as in run.sh) side by side in front of the same pinned
# nginx upstream as mem.sh, wrk -t2 -c64 against each in turn for ROUNDS rounds
# of DURATION seconds (CLOSE=1: a new client connection per request). Per round
# and target: req/s, CPU ticks (1/100 s) per 100k requests, the user-space part
# of them, and context switches per request (all threads of all processes). A
# build given as PATH:FILTER runs with RUST_LOG=FILTER (`:warn` turns the access
# log off, as nginx's is). UPSTREAM_SESSION=0 keeps the upstream in this
# script's session, run.sh's default setting (see pinned_nginx.sh).
#   bash tests/bench/split.sh target/release/pinproxy nginx
#   CLOSE=1 ROUNDS=5 bash tests/bench/split.sh /tmp/old/pinproxy target/release/pinproxy:warn nginx
#   UPSTREAM_SESSION=0 bash tests/bench/split.sh target/release/pinproxy:warn target/release/examples/floor nginx
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: split.sh PINPROXY[:RUST_LOG]... [nginx]" >&2; exit 1; }
DURATION=${DURATION:-4}
CLOSE=${CLOSE:-0}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-19004}
UP=${UP_PORT:-19446}
for tool in nginx wrk openssl curl python3; do
    command -v "$tool" >/dev/null || { echo "split: install $tool (apt-get install nginx wrk openssl curl python3)" >&2; exit 1; }
done
TARGETS=("$@")
BIN=""
for t in "${TARGETS[@]}"; do [ "$t" != nginx ] && { BIN=${t%%:*}; break; }; done
[ -n "$BIN" ] || { echo "split: name at least one pinproxy build" >&2; exit 1; }
. "$(dirname "$0")/pinned_nginx.sh"
# pinned_nginx.sh started one build on $PORT; every target gets its own port here.
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=""
header=()
[ "$CLOSE" = 1 ] && header=(-H "Connection: close")
processes() { echo "$1" $(pgrep -P "$1" || true); }
# "total user" ticks, and context switches, over every process and thread of $1
ticks() { for p in $(processes "$1"); do cat "/proc/$p/stat"; done | awk '{ sub(/.*\) /, ""); t += $12 + $13; u += $12 } END { print t, u }'; }
switches() { for p in $(processes "$1"); do cat /proc/"$p"/task/*/status; done | awk '/ctxt_switches/ { s += $2 } END { print s }'; }
started=()
trap 'for p in "${started[@]}"; do kill "$p" 2>/dev/null; done; [ -f "$W/up.pid" ] && kill "$(cat "$W/up.pid")" 2>/dev/null; rm -rf "$W"' EXIT
declare -A PID_OF PORT_OF
port=$PORT
for t in "${TARGETS[@]}"; do
    port=$((port + 1))
    if [ "$t" = nginx ]; then
        nginx_proxy_conf "$W/proxy$port.conf" "$port"
        nginx -c "$W/proxy$port.conf" -p "$W" >"$W/proxy$port.log" 2>&1 &
    else
        filter=info
        [[ "$t" == *:* ]] && filter=${t##*:}
        sed "s/:$PORT\"/:$port\"/" "$W/pinproxy.toml" >"$W/proxy$port.toml"
        RUST_LOG=$filter "${t%%:*}" run --config "$W/proxy$port.toml" >"$W/proxy$port.log" 2>&1 &
    fi
    started+=($!)
    PID_OF[$t]=$!
    PORT_OF[$t]=$port
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/small" && break; sleep 0.1; done
    wrk -t2 -c64 -d2s "${header[@]}" "http://127.0.0.1:$port/small" >/dev/null # warm-up
done
echo "round target req/s ticks/100k user/100k switches/request"
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        p=${PID_OF[$t]}
        read -r t0 u0 < <(ticks "$p")
        s0=$(switches "$p")
        out=$(wrk -t2 -c64 -d"${DURATION}s" "${header[@]}" "http://127.0.0.1:${PORT_OF[$t]}/small")
        read -r t1 u1 < <(ticks "$p")
        s1=$(switches "$p")
        n=$(awk '/requests in/ { print $1 }' <<<"$out")
        echo "$round $t $(awk '/Requests\/sec/ { print $2 }' <<<"$out") $(((t1 - t0) * 100000 / n)) $(((u1 - u0) * 100000 / n)) $(python3 -c "print(round(($s1 - $s0) / $n, 2))")"
    done
done
