"""Sums a `perf report --stdio --no-children --sort dso,symbol` (on stdin) into
the parts of pinproxy's request path, then lists the hottest symbols.
Usage: perf report ... | python3 profile_parts.py [TOP]"""
import re
import sys

# First match wins; a symbol is matched by its demangled name.
PARTS = [
    ("kernel (system calls, TCP, scheduling)", lambda dso, sym: dso == "[kernel.kallsyms]" or sym.startswith("[k]")),
    ("TLS and crypto (rustls, ring)", lambda dso, sym: re.search(r"\b(rustls|ring|tokio_rustls)::|ring_core_|aes_|gcm_|chacha|sha\d+_block", sym)),
    ("hyper and h2 (HTTP parsing and writing)", lambda dso, sym: re.search(r"\b(hyper|hyper_util|h2|httparse|http)::", sym)),
    ("tokio (reactor, timers, tasks)", lambda dso, sym: re.search(r"\btokio::|\bmio::", sym)),
    ("allocator and copies (malloc, free, memcpy)", lambda dso, sym: re.search(r"malloc|free|realloc|memcpy|memmove|memset|cfree|_int_", sym)),
    ("pinproxy's own code", lambda dso, sym: re.search(r"\bpinproxy::", sym)),
]
OTHER = "the rest (libc, std, bytes, tracing, ...)"

top = int(sys.argv[1]) if len(sys.argv) > 1 else 20
rows = []
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[([.k])\]\s+(.*)$", line)
    if not m:
        continue
    share, dso, kind = float(m.group(1)), m.group(2), m.group(3)
    # perf pads the symbol and adds columns of its own after it.
    sym = re.split(r"\s{3,}", m.group(4).strip())[0]
    if kind == "k":
        dso = "[kernel.kallsyms]"
    rows.append((share, dso, sym))
parts = {name: 0.0 for name, _ in PARTS}
parts[OTHER] = 0.0
for share, dso, sym in rows:
    for name, test in PARTS:
        if test(dso, sym):
            parts[name] += share
            break
    else:
        parts[OTHER] += share
print("| part | share of pinproxy's CPU samples |")
print("|---|---:|")
for name, share in parts.items():
    print(f"| {name} | {share:.1f}% |")
print()
print(f"hottest {top} symbols:")
for share, dso, sym in sorted(rows, reverse=True)[:top]:
    short = sym if len(sym) <= 100 else sym[:97] + "..."
    print(f"  {share:5.2f}%  {dso.split('/')[-1]:<18} {short}")
