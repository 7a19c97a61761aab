#!/usr/bin/env python3
"""Figures for tests/bench/run.sh.

  report.py wrk FILE SCENARIO TARGET CPU_TICKS CLK_TCK   one wrk output -> result lines
  report.py table RESULTS                                 medians and ratios -> markdown

Result lines are tab-separated: scenario, target, metric, value (one per round).
"""

import re
import statistics
import sys
from collections import defaultdict

TARGETS = ["pinproxy", "nginx", "haproxy", "stunnel", "direct"]
# The small-request loads also ran against pinproxy with its access log off, and
# against the floor (tests/bench/floor/), which is not a peer.
LOADS = ["pinproxy", "quiet", "floor", "nginx", "haproxy", "stunnel", "direct"]
PEERS = ["nginx", "haproxy", "stunnel"]
LABEL = {
    "pinproxy": "pinproxy (pinned)",
    "quiet": "pinproxy, access log off (as the peers')",
    "floor": "floor: no HTTP library, no checks (not a peer)",
    "nginx": "nginx proxy_pass, proxy_ssl_verify",
    "haproxy": "HAProxy, verify required",
    "stunnel": "stunnel client, verifyPeer",
    "direct": "direct HTTPS (the limit)",
}


def wrk(path, scenario, target, ticks, tck):
    out = open(path).read()

    def ms(text):
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    rows = [("rps", rps), ("p50", p50), ("p99", p99), ("errors", errors)]
    if target != "direct" and requests:
        rows.append(("cpu100k", int(ticks) / int(tck) / requests * 100000))
    for metric, value in rows:
        print(f"{scenario}\t{target}\t{metric}\t{value}")


def table(path):
    values = defaultdict(list)
    for line in open(path):
        scenario, target, metric, value = line.rstrip("\n").split("\t")
        values[(scenario, target, metric)].append(float(value))

    def med(scenario, target, metric):
        v = values.get((scenario, target, metric))
        return statistics.median(v) if v else None

    def fmt(v, digits=0):
        return "–" if v is None else f"{v:,.{digits}f}"

    def ratio(a, b):
        return "–" if not a or not b else f"{a / b:.2f}×"

    def per_round(a, b, shown):
        """Round by round, a goal's `value` (a ÷ b, where ≥ the need meets it) and
        the ratio as the table shows it (`shown` of a and b): the loads of a round
        ran back to back, so these pairs show how far one run moves."""
        return [(x / y, shown(x, y)) for x, y in zip(values.get(a, []), values.get(b, [])) if x and y]

    rounds = len(values.get(("keepalive", "pinproxy", "rps"), []))
    print(f"Medians of {rounds} interleaved rounds. Ratios compare pinproxy with each row: "
          "pinproxy ÷ row for rates, row ÷ pinproxy for latency and CPU, so above 1.00× pinproxy is better.\n")
    goals = []
    like_for_like = []
    floor = []
    for scenario, title in (("keepalive", "Keep-alive, ~1 KiB JSON"), ("close", "Connection per request (`Connection: close`), ~1 KiB JSON")):
        print(f"#### {title}\n")
        print("| target | req/s | ratio | p50 ms | p99 ms | p99 ratio | CPU s / 100k req | CPU ratio | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        ours = {m: med(scenario, "pinproxy", m) for m in ("rps", "p50", "p99", "cpu100k")}
        for t in LOADS:
            row = {m: med(scenario, t, m) for m in ("rps", "p50", "p99", "cpu100k")}
            if row["rps"] is None:
                continue
            errors = sum(values.get((scenario, t, "errors"), []))
            me = t == "pinproxy"
            print(f"| {LABEL[t]} | {fmt(row['rps'])} | {'' if me else ratio(ours['rps'], row['rps'])} "
                  f"| {fmt(row['p50'], 2)} | {fmt(row['p99'], 2)} | {'' if me else ratio(row['p99'], ours['p99'])} "
                  f"| {fmt(row['cpu100k'], 2)} | {'' if me or t == 'direct' else ratio(row['cpu100k'], ours['cpu100k'])} "
                  f"| {errors:.0f} |")
        print()
        best = max(PEERS, key=lambda t: med(scenario, t, "rps") or 0)
        best_rps = med(scenario, best, "rps")
        thrifty = min(PEERS, key=lambda t: med(scenario, t, "cpu100k") or float("inf"))
        peer_cpu = med(scenario, thrifty, "cpu100k")
        name = "keep-alive" if scenario == "keepalive" else "connection-per-request"
        # The engine issue's goals: CPU per request at most the thriftiest peer's
        # (0.8× is the aim), req/s at least the best peer's, and 3× direct HTTPS
        # when every request opens a connection.
        if peer_cpu and ours["cpu100k"]:
            goals.append((f"{name} CPU per request ≤ 1.0× the thriftiest peer's (aim 0.8×)", peer_cpu / ours["cpu100k"], 1.0,
                          f"{ours['cpu100k'] / peer_cpu:.2f}× ({thrifty})",
                          per_round((scenario, thrifty, "cpu100k"), (scenario, "pinproxy", "cpu100k"), lambda p, o: o / p)))
        rate = lambda o, p: o / p  # noqa: E731
        goals.append((f"{name} req/s ≥ 1.0× best peer", ours["rps"] / best_rps, 1.0, best,
                      per_round((scenario, "pinproxy", "rps"), (scenario, best, "rps"), rate)))
        if scenario == "close":
            goals.append(("connection-per-request req/s ≥ 3× direct HTTPS", ours["rps"] / med(scenario, "direct", "rps"), 3.0, "direct",
                          per_round((scenario, "pinproxy", "rps"), (scenario, "direct", "rps"), rate)))
        quiet = {m: med(scenario, "quiet", m) for m in ("rps", "cpu100k")}
        if quiet["rps"] and quiet["cpu100k"] and peer_cpu:
            like_for_like.append(f"{name} CPU per request {quiet['cpu100k'] / peer_cpu:.2f}× {thrifty}'s, "
                                 f"req/s {quiet['rps'] / best_rps:.2f}× {best}'s")
        bare = {m: med(scenario, "floor", m) for m in ("rps", "cpu100k")}
        if bare["rps"] and bare["cpu100k"] and peer_cpu:
            floor.append(f"{name} CPU per request {bare['cpu100k'] / peer_cpu:.2f}× {thrifty}'s, "
                         f"req/s {bare['rps'] / best_rps:.2f}× {best}'s")

    transfers = len(values.get(("bulk", "pinproxy", "download"), []))
    print(f"#### Bulk: {transfers} downloads and {transfers} uploads per target, medians, MB/s (10^6 bytes)\n")
    print("| target | download MB/s | ratio | upload MB/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    down, up = med("bulk", "pinproxy", "download"), med("bulk", "pinproxy", "upload")
    for t in TARGETS:
        d, u = med("bulk", t, "download"), med("bulk", t, "upload")
        me = t == "pinproxy"
        print(f"| {LABEL[t]} | {fmt(d)} | {'' if me else ratio(down, d)} | {fmt(u)} | {'' if me else ratio(up, u)} |")
    print()
    for kind, ours in (("download", down), ("upload", up)):
        best = max(PEERS, key=lambda t: med("bulk", t, kind) or 0)
        goals.append((f"bulk {kind} ≥ 0.9× best peer", ours / med("bulk", best, kind), 0.9, best,
                      per_round(("bulk", "pinproxy", kind), ("bulk", best, kind), lambda o, p: o / p)))

    print("#### Memory (VmRSS, all processes of the proxy)\n")
    print("| target | idle after start | … of it private | idle after the loads | 1,000 open keep-alive clients |")
    print("|---|---:|---:|---:|---:|")
    for t in TARGETS[:-1]:
        cells = [med("memory", t, m) for m in ("idle", "idle_private", "idle_after", "conns")]
        print("| " + LABEL[t] + " | " + " | ".join("–" if c is None else f"{c / 1024:.1f} MiB" for c in cells) + " |")
    print("\nPrivate: RssAnon, the heap and stacks. The rest of RSS is pages of the binary and its libraries\n"
          "mapped from the page cache, shared with every process that runs them; how much of a binary a\n"
          "start maps depends on the kernel (docs/benchmark.md, twelfth round).\n")
    for text, metric, limit in (("pinproxy RSS idle ≤ 10 MiB", "idle", 10), ("pinproxy RSS with 1,000 clients ≤ 24 MiB", "conns", 24)):
        mib = med("memory", "pinproxy", metric) / 1024
        each = [(limit * 1024 / v, v / 1024) for v in values.get(("memory", "pinproxy", metric), []) if v]
        goals.append((text, limit / mib, 1.0, f"{mib:.1f} MiB", each))

    print("#### Goals\n")
    print("Met or not on the medians; the last two columns show the figure of each round, smallest first (of each\n"
          "transfer for bulk: lowest–highest), the spread a single run has.\n")
    print("| goal | measured (medians) | met | per round | rounds met |")
    print("|---|---:|:---:|---:|---:|")
    for text, value, need, against, rounds in goals:
        shown = against if against.endswith(("MiB", ")")) else f"{value:.2f}× ({against})"
        unit = " MiB" if against.endswith("MiB") else "×"
        figures = sorted(s for _, s in rounds)
        if len(figures) > 5:  # bulk: a transfer per repeat and round
            figures = [figures[0], figures[-1]]
        join = "–" if len(rounds) > 5 else ", "
        each = join.join(f"{s:.1f}" if unit == " MiB" else f"{s:.2f}" for s in figures) + unit if rounds else "–"
        met = sum(1 for v, _ in rounds if v >= need)
        print(f"| {text} | {shown} | {'yes' if value >= need else '**no**'} | {each} | {met} of {len(rounds)} |")
    if like_for_like:
        print("\nNot a goal, the same comparison with pinproxy's access log off as the peers' are: "
              + "; ".join(like_for_like) + ".")
    if floor:
        print("\nThe floor under an engine of our own (tests/bench/floor/), the same comparison: "
              + "; ".join(floor) + ".")


if __name__ == "__main__":
    if sys.argv[1] == "wrk":
        wrk(*sys.argv[2:7])
    elif sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)
