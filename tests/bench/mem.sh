#!/usr/bin/env bash
# Memory and CPU of one pinproxy build, in front of nginx as a self-signed HTTPS
# upstream: VmRSS after start (and one request), req/s and CPU ticks (1/100 s) per
# 100k requests for a keep-alive and a connection-per-request load (wrk -t2 -c64),
# VmRSS SETTLE seconds after the loads, then with 1,000 kept-alive clients that
# have each made one request (and again HOLD seconds later, default 11). A quick
# look between full runs of run.sh:
#   bash tests/bench/mem.sh target/release/pinproxy
#   SETTLE=11 DURATION=5s bash tests/bench/mem.sh /tmp/old/pinproxy
set -euo pipefail
BIN=${1:?usage: mem.sh PATH-TO-PINPROXY}
DURATION=${DURATION:-5s}
SETTLE=${SETTLE:-11}
PORT=${PORT:-19001}
UP=${UP_PORT:-19443}
for tool in nginx wrk openssl curl python3; do
    command -v "$tool" >/dev/null || { echo "mem: install $tool (apt-get install nginx wrk openssl curl python3)" >&2; exit 1; }
done
. "$(dirname "$0")/pinned_nginx.sh"
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$pid/status"; }
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"; }
echo "RSS after start: $(rss) KiB"
for mode in keep-alive close; do
    header=()
    [ "$mode" = close ] && header=(-H "Connection: close")
    before=$(ticks)
    out=$(wrk -t2 -c64 -d"$DURATION" "${header[@]}" "http://127.0.0.1:$PORT/small")
    after=$(ticks)
    requests=$(awk '/requests in/ { print $1 }' <<<"$out")
    echo "$mode: $(awk '/Requests\/sec/ { print $2 }' <<<"$out") req/s, $(((after - before) * 100000 / requests)) CPU ticks per 100k"
done
sleep "$SETTLE"
echo "RSS ${SETTLE} s after the loads: $(rss) KiB"
python3 - "$PORT" 1000 "$pid" "${HOLD:-11}" <<'PY'
import socket, sys, time
port, count, pid, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
conns = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed early")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(body) < length:
        body += s.recv(65536)
    conns.append(s)
def rss():
    return [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")][0].split()[1]
print(f"RSS with {count} kept-alive clients: {rss()} KiB")
# Once they idle: pinproxy gives back an idle connection's buffers after
# release_idle_buffers_after, and freed heap to the system every 10 s.
time.sleep(hold)
print(f"RSS with {count} kept-alive clients, {hold:g} s later: {rss()} KiB")
PY
