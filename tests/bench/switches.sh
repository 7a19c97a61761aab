#!/usr/bin/env bash
# System calls and context switches per request, pinproxy (access log on, as it
# ships) and nginx as a verifying proxy (as run.sh configures it), each in front
# of nginx as a self-signed HTTPS upstream (pinned_nginx.sh): wrk -t2 -c64 for
# DURATION with keep-alive, then with a new client connection per request;
# `perf stat` counts the proxy's processes only. Shows where the kernel's share
# of a request goes: how often the proxy sleeps in epoll_wait, is switched out,
# and writes its access log (`write`; responses and upstream requests are
# `writev`). Counts, not CPU time, so one run is a reading.
#   bash tests/bench/switches.sh target/release/pinproxy
#   UPSTREAM_SESSION=0 bash tests/bench/switches.sh target/release/pinproxy
set -euo pipefail
BIN=${1:?usage: switches.sh PATH-TO-PINPROXY}
DURATION=${DURATION:-5}
PORT=${PORT:-19005}
UP=${UP_PORT:-19447}
NGINX_PORT=${NGINX_PORT:-19006}
for tool in nginx wrk openssl curl perf; do
    command -v "$tool" >/dev/null || { echo "switches: install $tool (apt-get install nginx wrk openssl curl linux-perf)" >&2; exit 1; }
done
. "$(dirname "$0")/pinned_nginx.sh"
# pinned_nginx.sh starts the build with its access log off; this one keeps it on.
kill "$pid"
wait "$pid" 2>/dev/null || true
"$BIN" run --config "$W/pinproxy.toml" >"$W/pinproxy.log" 2>&1 &
pid=$!
nginx_proxy_conf "$W/proxy.conf" "$NGINX_PORT"
nginx -c "$W/proxy.conf" -p "$W" &
for port in "$PORT" "$NGINX_PORT"; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/small" && break; sleep 0.1; done
done
nginx_workers=$(pgrep -d, -P "$(cat "$W/proxy.conf.pid")")
trap 'kill "$(cat "$W/proxy.conf.pid")" 2>/dev/null; kill "$pid" 2>/dev/null; [ -f "$W/up.pid" ] && kill "$(cat "$W/up.pid")" 2>/dev/null; rm -rf "$W"' EXIT

echo "| pattern | proxy | requests | epoll_wait | write | writev | context switches |"
echo "|---|---|---:|---:|---:|---:|---:|"
for pattern in keep-alive close; do
    header=()
    [ "$pattern" = close ] && header=(-H "Connection: close")
    for proxy in pinproxy nginx; do
        if [ "$proxy" = pinproxy ]; then pids=$pid port=$PORT; else pids=$nginx_workers port=$NGINX_PORT; fi
        wrk -t2 -c64 -d2s "${header[@]}" "http://127.0.0.1:$port/small" >/dev/null
        perf stat -x, -e syscalls:sys_enter_epoll_wait -e syscalls:sys_enter_write \
            -e syscalls:sys_enter_writev -e context-switches -p "$pids" -o "$W/perf.csv" -- sleep "$DURATION" &
        perf_pid=$!
        wrk -t2 -c64 -d"${DURATION}s" "${header[@]}" "http://127.0.0.1:$port/small" >"$W/wrk.txt"
        wait "$perf_pid"
        requests=$(awk '/requests in/ {print $1}' "$W/wrk.txt")
        awk -F, -v p="$pattern" -v x="$proxy" -v r="$requests" '
            /^[0-9]/ { n[$3] = $1 }
            END { printf "| %s | %s | %d | %.3f | %.3f | %.3f | %.3f |\n", p, x, r,
                  n["syscalls:sys_enter_epoll_wait"] / r, n["syscalls:sys_enter_write"] / r,
                  n["syscalls:sys_enter_writev"] / r, n["context-switches"] / r }' "$W/perf.csv"
    done
done
