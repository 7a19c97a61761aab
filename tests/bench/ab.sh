#!/usr/bin/env bash
# A/B of two pinproxy builds on the keep-alive path (CLOSE=1: a new client
# connection per request instead): both in front of the same
# upstream (the demo's mock API, from the OLD build), wrk -t2 -c64 against each
# in turn for ROUNDS rounds of DURATION, req/s and the proxy's own CPU (utime +
# stime ticks, 1/100 s) per 100k requests. Medians are what to compare; this VM
# varies by ±5% from run to run.
#   OLD=/path/to/old/pinproxy NEW=target/release/pinproxy bash tests/bench/ab.sh
# (an old build: git worktree add /tmp/old REV && CARGO_TARGET_DIR=/tmp/oldtarget
#  cargo build --release --manifest-path /tmp/old/Cargo.toml)
set -euo pipefail
OLD=${OLD:?set OLD to the baseline binary}
NEW=${NEW:-target/release/pinproxy}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5s}
CLOSE=${CLOSE:-0}
close=()
[ "$CLOSE" = 1 ] && close=(-H "Connection: close")
command -v wrk >/dev/null || { echo "ab: install wrk (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

# UPSTREAM=HOST:PORT PIN="SHA1: …" TARGET=/path: another upstream instead of the demo's
if [ -n "${UPSTREAM:-}" ]; then
    upstream=$UPSTREAM pin=${PIN:?set PIN with UPSTREAM}
else
    "$OLD" demo --listen 127.0.0.1:0 > "$work/demo" 2>&1 & pids+=($!)
    for _ in $(seq 100); do grep -q '^SHA1:' "$work/demo" && break; sleep 0.1; done
    upstream=$(grep -o 'serving HTTPS on [0-9.:]*' "$work/demo" | awk '{print $4}')
    pin=$(grep -m1 '^SHA1:' "$work/demo")
fi
target=${TARGET:-/web_api/show-hosts}
start() { RUST_LOG=warn "$1" run --listen "127.0.0.1:$2" --upstream "$upstream" --fingerprint "$pin" \
            --server-name "${SERVER_NAME:-mgmt.demo.pinproxy}" > /dev/null 2>&1 & pids+=($!); }
start "$OLD" 18001; old=$!
start "$NEW" 18002; new=$!
for port in 18001 18002; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
    for side in "old $old 18001" "new $new 18002"; do
        set -- $side
        before=$(ticks "$2")
        out=$(wrk -t2 -c64 -d"$DURATION" "${close[@]}" "http://127.0.0.1:$3$target")
        after=$(ticks "$2")
        requests=$(awk '/requests in/ {print $1}' <<< "$out")
        rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
        echo "round $round $1 req/s $rps cpu_ticks_per_100k $(( (after - before) * 100000 / requests ))"
    done
done | tee "$work/rounds"
echo "medians (req/s, CPU ticks per 100k):"
for side in old new; do
    awk -v s="$side" '$3 == s {print $5, $7}' "$work/rounds" | sort -n -k1 | awk '{r[NR]=$1} END {printf "%s req/s %s", "'"$side"'", r[int((NR+1)/2)]}'
    awk -v s="$side" '$3 == s {print $7}' "$work/rounds" | sort -n | awk '{c[NR]=$1} END {printf "  cpu %s\n", c[int((NR+1)/2)]}'
done
