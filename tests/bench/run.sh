#!/usr/bin/env bash
# Side-by-side benchmark: pinproxy against nginx, HAProxy and stunnel, each in front of
# the same self-signed HTTPS upstream (nginx), with direct HTTPS as the limit.
#
#   bash tests/bench/run.sh                 # 5 interleaved rounds of 10 s loads
#   ROUNDS=3 DURATION=5 bash tests/bench/run.sh
#
# It installs what it needs from Debian (nginx, haproxy, stunnel4, wrk, openssl, curl,
# python3), builds pinproxy in release mode (or uses $PINPROXY), runs every scenario
# against every target in turn (A B C D E, A B C D E, ...), and prints one markdown
# table per scenario with medians and ratios to pinproxy. Every process it starts is
# stopped on exit; every wait and every load is bounded in count and time.
#
# The small-request loads also run against the same build with its access log off (as
# the peers' are), shown as a row of its own; the goals are read from the default build.
# They also run against tests/bench/floor/, a bare forwarder on the same runtime and
# TLS with no HTTP library and no checks: not a peer, the floor under an engine of our
# own (docs/benchmark.md, tenth round). FLOOR=0 leaves it out.
#
# Settings (environment): ROUNDS (5), DURATION seconds per wrk run (10), CONNS keep-alive
# connections (64), CLOSE_CONNS connections for connection-per-request (64), BULK_MIB
# download size (1024), UPLOAD_MIB (256), BULK_REPEAT transfers of each per target and
# round (3), IDLE_CONNS (1000), SETTLE seconds without load before memory is read (11),
# PORT_BASE (18400), UPSTREAM_SESSION=1 (the upstream in a session of its own, below),
# PINPROXY (path to a built binary), FLOOR (path to a built floor example, or 0 for
# none), KEEP=1 keeps the work directory, OUT=FILE also writes the tables there.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
CLOSE_CONNS=${CLOSE_CONNS:-64}
BULK_MIB=${BULK_MIB:-1024}
BULK_REPEAT=${BULK_REPEAT:-3}
UPLOAD_MIB=${UPLOAD_MIB:-256}
IDLE_CONNS=${IDLE_CONNS:-1000}
PORT_BASE=${PORT_BASE:-18400}
THREADS=${THREADS:-2}
SETTLE=${SETTLE:-11}

cd "$(dirname "$0")/../.."
ROOT=$(pwd)

need=()
for tool in nginx:nginx haproxy:haproxy stunnel:stunnel4 wrk:wrk openssl:openssl curl:curl python3:python3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if ((${#need[@]})); then
    echo "installing ${need[*]} from Debian" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ -z "${PINPROXY:-}" ]; then
    cargo build --release --locked --quiet
    PINPROXY="$ROOT/target/release/pinproxy"
fi
if [ -z "${FLOOR:-}" ]; then
    cargo build --release --locked --quiet --example floor
    FLOOR="$ROOT/target/release/examples/floor"
fi

# In memory where there is a tmpfs: the upstream stores the uploads here, and an
# upload through a proxy should not measure the disk's writeback of the ones before.
base=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
W=$(mktemp -d "$base/pinproxy-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then
        echo "work directory kept: $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

P_UP=$((PORT_BASE + 43))
declare -A PORT=([pinproxy]=$((PORT_BASE + 1)) [nginx]=$((PORT_BASE + 2)) [haproxy]=$((PORT_BASE + 3)) [stunnel]=$((PORT_BASE + 4)) [quiet]=$((PORT_BASE + 5)) [floor]=$((PORT_BASE + 6)) [direct]=$P_UP)
TARGETS=(pinproxy nginx haproxy stunnel direct)
# The small-request loads also run against `quiet`: the same build with its access
# log off, as the peers' are, so the tables show what the log costs, and against the floor.
LOADS=(pinproxy quiet nginx haproxy stunnel direct)
[ "$FLOOR" = 0 ] || LOADS=(pinproxy quiet floor nginx haproxy stunnel direct)
PEERS=(nginx haproxy stunnel)

for port in "$P_UP" "${PORT[pinproxy]}" "${PORT[nginx]}" "${PORT[haproxy]}" "${PORT[stunnel]}" "${PORT[quiet]}" "${PORT[floor]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; set PORT_BASE to a free range" >&2
        exit 1
    fi
done

# waits (at most 10 s) until a TCP port accepts connections
wait_port() {
    local i
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1 after 10 s; logs are in $W" >&2
    KEEP=1
    exit 1
}

# --- the upstream: nginx, HTTPS with a self-signed RSA-2048 certificate -------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
PIN=$(openssl x509 -in "$W/cert.pem" -noout -fingerprint -sha1 | cut -d= -f2)
mkdir -p "$W/www/store" "$W/tmp"
# nginx workers started by root run as nobody: they read www and write uploads and temp files
chmod 755 "$W"
chmod 1777 "$W/www/store" "$W/tmp"
python3 - "$W/www/small.json" <<'EOF'
import json, sys
items = [{"uid": f"{i:08x}-6c1d-4ea4-9c3e-2f0c7a1b5d{i:02x}", "name": f"host-{i}", "type": "host", "ipv4-address": f"192.0.2.{i}"} for i in range(9)]
body = json.dumps({"objects": items, "from": 1, "to": 9, "total": 9}, indent=1)
open(sys.argv[1], "w").write(body)
EOF
head -c 65536 /dev/urandom >"$W/www/64k"
truncate -s "${BULK_MIB}M" "$W/www/bulk"
truncate -s "${UPLOAD_MIB}M" "$W/upload.bin"

cat >"$W/upstream.conf" <<EOF
daemon off;
worker_processes auto;
pid $W/upstream.pid;
error_log $W/upstream.err warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $W/tmp;
    server {
        listen 127.0.0.1:$P_UP ssl reuseport;
        ssl_certificate $W/cert.pem;
        ssl_certificate_key $W/key.pem;
        ssl_session_cache shared:SSL:10m;
        root $W/www;
        location = /small { default_type application/json; try_files /small.json =404; }
        location = /64k { default_type application/octet-stream; }
        location = /bulk { default_type application/octet-stream; }
        # PUT stores the upload (in memory, see W above), so the whole body is read
        # before the answer: every proxy must stream all of it.
        location /store/ { dav_methods PUT; client_max_body_size 0; create_full_put_path on; }
    }
}
EOF

# --- the peers ------------------------------------------------------------------------------
cat >"$W/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $W/nginx.pid;
error_log $W/nginx.err warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_max_body_size 0;
    client_body_temp_path $W/tmp;
    proxy_temp_path $W/tmp;
    upstream up {
        server 127.0.0.1:$P_UP;
        keepalive 128;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} reuseport;
        location / {
            proxy_pass https://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $W/cert.pem;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF

cat >"$W/haproxy.cfg" <<EOF
global
    maxconn 8000
    pidfile $W/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:${PORT[haproxy]}
    default_backend be
backend be
    # Idle server connections serve any client's request, as nginx's keepalive
    # pool and pinproxy's pool do. HAProxy's default, safe, sends the first request
    # of each client connection over a new server connection: with a connection per
    # request that is a TLS handshake per request (2.0k req/s here against 12.9k).
    http-reuse always
    server up 127.0.0.1:$P_UP ssl verify required ca-file $W/cert.pem verifyhost localhost sni str(localhost)
EOF

cat >"$W/stunnel.conf" <<EOF
foreground = yes
pid =
output = $W/stunnel.log
debug = warning
[up]
client = yes
accept = 127.0.0.1:${PORT[stunnel]}
connect = 127.0.0.1:$P_UP
verifyPeer = yes
CAfile = $W/cert.pem
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
EOF

cat >"$W/pinproxy.toml" <<EOF
[[upstream]]
name = "bench"
listen = "127.0.0.1:${PORT[pinproxy]}"
address = "127.0.0.1:$P_UP"
fingerprints = ["$PIN"]
EOF

nginx -t -q -c "$W/upstream.conf" -p "$W" 2>/dev/null || nginx -t -c "$W/upstream.conf" -p "$W"
# UPSTREAM_SESSION=1 starts the upstream in a session of its own, as a service
# manager would start a server; with the kernel's autogroup scheduling (on here) it
# then gets its own share of the cores instead of one share with the proxies and wrk.
# On the 2-core VM that moves the small-request CPU ratios a long way (see
# docs/benchmark.md), which is why the default keeps the setting of the goals.
upstream_wrap=()
[ "${UPSTREAM_SESSION:-0}" = 1 ] && upstream_wrap=(setsid)
"${upstream_wrap[@]}" nginx -c "$W/upstream.conf" -p "$W" 2>>"$W/upstream.err" &
PIDS+=($!)
wait_port "$P_UP"

declare -A PID
nginx -c "$W/nginx.conf" -p "$W" 2>>"$W/nginx.err" &
PID[nginx]=$!
haproxy -f "$W/haproxy.cfg" -q 2>"$W/haproxy.err" &
PID[haproxy]=$!
stunnel "$W/stunnel.conf" 2>"$W/stunnel.err" &
PID[stunnel]=$!
"$PINPROXY" run --config "$W/pinproxy.toml" >"$W/pinproxy.log" 2>&1 &
PID[pinproxy]=$!
sed "s/:${PORT[pinproxy]}\"/:${PORT[quiet]}\"/" "$W/pinproxy.toml" >"$W/quiet.toml"
RUST_LOG=info,pinproxy::access=off "$PINPROXY" run --config "$W/quiet.toml" >"$W/quiet.log" 2>&1 &
PID[quiet]=$!
PIDS+=("${PID[nginx]}" "${PID[haproxy]}" "${PID[stunnel]}" "${PID[pinproxy]}" "${PID[quiet]}")
if [ "$FLOOR" != 0 ]; then
    sed "s/:${PORT[pinproxy]}\"/:${PORT[floor]}\"/" "$W/pinproxy.toml" >"$W/floor.toml"
    "$FLOOR" run --config "$W/floor.toml" >"$W/floor.log" 2>&1 &
    PID[floor]=$!
    PIDS+=("${PID[floor]}")
fi
for t in "${LOADS[@]}"; do
    [ "$t" = direct ] || wait_port "${PORT[$t]}"
done

url() { # target path
    if [ "$1" = direct ]; then
        echo "https://localhost:$P_UP$2"
    else
        echo "http://127.0.0.1:${PORT[$1]}$2"
    fi
}
CURL=(curl -sS --fail --cacert "$W/cert.pem" --resolve "localhost:$P_UP:127.0.0.1" -o /dev/null)

# every target must answer correctly before anything is measured
expected=$(wc -c <"$W/www/small.json")
for t in "${LOADS[@]}"; do
    got=$("${CURL[@]}" --max-time 10 -w '%{http_code} %{size_download}' "$(url "$t" /small)") || {
        echo "$t does not answer $(url "$t" /small); logs are in $W" >&2
        KEEP=1
        exit 1
    }
    [ "$got" = "200 $expected" ] || {
        echo "$t answered '$got', expected '200 $expected'" >&2
        exit 1
    }
done

# all processes of a target (nginx: master and workers), for CPU and memory
pids_of() {
    [ "$1" = direct ] && return 0
    local p=${PID[$1]}
    echo "$p"
    [ -r "/proc/$p/task/$p/children" ] && tr ' ' '\n' <"/proc/$p/task/$p/children" | grep -v '^$' || true
}
cpu_ticks() { # sum of utime+stime over the given pids
    local total=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
    done
    echo "$total"
}
rss_kib() { # VmRSS summed, or another field of /proc/PID/status with RSS_FIELD
    local total=0 p
    for p in "$@"; do
        [ -r "/proc/$p/status" ] || continue
        total=$((total + $(awk -v field="^${RSS_FIELD:-VmRSS}:" '$0 ~ field { print $2 }' "/proc/$p/status")))
    done
    echo "$total"
}
TCK=$(getconf CLK_TCK)
RESULTS="$W/results.tsv"
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

wrk_run() { # scenario target conns [wrk args...]: one load, its figures and the CPU it cost
    local scenario=$1 t=$2 conns=$3
    shift 3
    local pids before after
    mapfile -t pids < <(pids_of "$t")
    before=$(cpu_ticks "${pids[@]}")
    timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency "$@" "$(url "$t" /small)" >"$W/wrk.out"
    after=$(cpu_ticks "${pids[@]}")
    python3 "$ROOT/tests/bench/report.py" wrk "$W/wrk.out" "$scenario" "$t" "$(((after - before)))" "$TCK" >>"$RESULTS"
}

bulk_run() { # target
    local t=$1 down up
    down=$("${CURL[@]}" --max-time 300 -w '%{speed_download}' "$(url "$t" /bulk)")
    up=$("${CURL[@]}" --max-time 300 -T "$W/upload.bin" -w '%{speed_upload}' "$(url "$t" /store/upload-$t)")
    record bulk "$t" download "$(python3 -c "print($down / 1e6)")"
    record bulk "$t" upload "$(python3 -c "print($up / 1e6)")"
}

for t in pinproxy nginx haproxy stunnel; do
    mapfile -t pids < <(pids_of "$t")
    record memory "$t" idle "$(rss_kib "${pids[@]}")"
    # Of it, what is the process's own (heap, stacks): RSS also counts the pages
    # of the binary and libraries it has mapped, which the page cache shares.
    record memory "$t" idle_private "$(RSS_FIELD=RssAnon rss_kib "${pids[@]}")"
done

echo "warming up every target (2 s each)" >&2
for t in "${LOADS[@]}"; do
    timeout 30 wrk -t"$THREADS" -c"$CONNS" -d2s "$(url "$t" /small)" >/dev/null
done

for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round of $ROUNDS" >&2
    for t in "${LOADS[@]}"; do wrk_run keepalive "$t" "$CONNS"; done
    for t in "${LOADS[@]}"; do wrk_run close "$t" "$CLOSE_CONNS" -H "Connection: close"; done
    # Several transfers, every target in turn each time: one 256 MiB upload can take
    # three times as long as the next identical one on this VM.
    for ((rep = 1; rep <= BULK_REPEAT; rep++)); do
        for t in "${TARGETS[@]}"; do bulk_run "$t"; done
    done
done

# memory with many idle keep-alive clients: each connection makes one request, then stays
# open; RSS is read while all of them are open
cat >"$W/idle.py" <<'EOF'
import socket, sys
port, count, pids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
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
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
print(sum(rss(p) for p in pids))
EOF
# Memory is what a process holds once a load is over, not in its last second:
# pinproxy hands freed heap back every 10 s (main.rs, `heap`), so every target
# gets SETTLE seconds without load before it is read.
sleep "$SETTLE"
for t in pinproxy nginx haproxy stunnel; do
    mapfile -t pids < <(pids_of "$t")
    record memory "$t" idle_after "$(rss_kib "${pids[@]}")"
    record memory "$t" conns "$(timeout 120 python3 "$W/idle.py" "${PORT[$t]}" "$IDLE_CONNS" "${pids[@]}")"
done

machine() {
    echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    echo "- versions: $("$PINPROXY" --version), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), stunnel $(stunnel -version 2>&1 | awk '/^stunnel/ { print $2; exit }'), $(openssl version | awk '{ print $1, $2 }'), wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), curl $(curl --version | awk 'NR == 1 { print $2 }')"
    echo "- run: ROUNDS=$ROUNDS DURATION=${DURATION}s UPSTREAM_SESSION=${UPSTREAM_SESSION:-0} CONNS=$CONNS CLOSE_CONNS=$CLOSE_CONNS BULK_MIB=$BULK_MIB UPLOAD_MIB=$UPLOAD_MIB BULK_REPEAT=$BULK_REPEAT IDLE_CONNS=$IDLE_CONNS SETTLE=${SETTLE}s, wrk -t$THREADS; load generator, proxy and upstream share the cores"
}
{
    echo "### pinproxy benchmark, $(date -u +%Y-%m-%d)"
    echo
    machine
    echo
    python3 "$ROOT/tests/bench/report.py" table "$RESULTS"
} | tee "${OUT:-/dev/null}"
