# Sourced by mem.sh and profile.sh: nginx as a self-signed HTTPS upstream on
# 127.0.0.1:$UP serving /small (~1.2 KiB), and the pinproxy build $BIN pinned to
# it on 127.0.0.1:$PORT, both in a temporary directory $W that goes on exit.
# Leaves $pid set to pinproxy's process, and defines nginx_proxy_conf.
# The upstream daemonizes into a session of its own; UPSTREAM_SESSION=0 keeps it
# in the script's session, as run.sh's default does (with autogroup scheduling
# that changes how the two cores are shared: docs/benchmark.md, sixth round).
W=$(mktemp -d /tmp/pinproxy-bench.XXXXXX)
chmod 755 "$W"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -f "$W/up.pid" ] && kill "$(cat "$W/up.pid")" 2>/dev/null; rm -rf "$W"' EXIT

mkdir -p "$W/www" "$W/tmp"
chmod 1777 "$W/tmp"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
head -c 1200 /dev/urandom | base64 -w 76 >"$W/www/small"
UPSTREAM_SESSION=${UPSTREAM_SESSION:-1}
cat >"$W/up.conf" <<C
daemon $([ "$UPSTREAM_SESSION" = 0 ] && echo off || echo on);
worker_processes auto;
pid $W/up.pid;
error_log $W/up.err warn;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s; client_body_temp_path $W/tmp;
  server { listen 127.0.0.1:$UP ssl reuseport; ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
           root $W/www; location = /small { default_type application/json; } } }
C
if [ "$UPSTREAM_SESSION" = 0 ]; then
    nginx -c "$W/up.conf" -p "$W" &
    for _ in $(seq 100); do [ -s "$W/up.pid" ] && break; sleep 0.1; done
else
    nginx -c "$W/up.conf" -p "$W"
fi
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

# nginx_proxy_conf FILE PORT [PROCESSES]: writes to FILE the config of nginx as a
# verifying proxy on 127.0.0.1:PORT in front of this upstream, as run.sh's nginx
# peer is configured; PROCESSES replaces `worker_processes auto;`.
nginx_proxy_conf() {
    cat >"$1" <<C
daemon off; ${3:-worker_processes auto;} pid $1.pid; error_log $1.err warn;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 100000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; keepalive_requests 100000000; }
  server { listen 127.0.0.1:$2 reuseport;
    location / { proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_verify on; proxy_ssl_trusted_certificate $W/cert.pem; proxy_ssl_name localhost;
      proxy_ssl_session_reuse on; proxy_request_buffering off; } } }
C
}
