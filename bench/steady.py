#!/usr/bin/env python3
"""A steady 2x overload against one target, watched closely: for looking into how the
adaptive limit settles (not part of run.sh's tables).

    python3 bench/steady.py [--spread 0.5] [--duration 20] [--fixed L]
                            [--target sluice|haproxy-prio|direct] [--out DIR]

The app (capacity 20, 50 ms, `--spread`) gets 4 x 50 req/s for 3 s, then 4 x 200 req/s
for `--duration` s. Every 100 ms it samples sluice's limit and in-flight count and the
app's in-service and queued counts; sluice runs with the gate's debug log, so every
window's decision is in DIR/sluice.log. `--fixed L` pins the limit (min = max = L).
Prints successes per second over the run (the goodput, from the start of the overload
to its end: answers still queued at the end are counted if they come within the
generator's timeout), the limit's spread, the windows by the limit non-critical
requests had (limit less the critical lane), the mean counts, and sluice's refusals.
Needs `cargo build --release --bins` first (or BIN_DIR)."""

import argparse
import json
import os
import re
import resource
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HOST, Procs  # noqa: E402

WINDOW = re.compile(r"window closed.*")
FIELD = re.compile(r"(\w+)=([0-9.]+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spread", type=float, default=0.5)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--fixed", type=int)
    ap.add_argument("--target", default="sluice", choices=["sluice", "haproxy-prio", "direct"])
    ap.add_argument("--slow-at", type=float,
                    help="seconds into the overload at which every service time grows "
                         "to --slow-ms (as in scenario 5)")
    ap.add_argument("--slow-ms", type=int, default=58)
    ap.add_argument("--out", default="target/steady")
    args = ap.parse_args()
    # As run.sh's `ulimit -n`: HAProxy's config asks for 20,000 descriptors.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bin_dir = os.environ.get("BIN_DIR", os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "release"))
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    bench_dir = os.path.join(root, "bench")
    if args.fixed:
        # The harness reads bench_dir/sluice-bench.toml: a pinned copy in the output dir.
        with open(os.path.join(bench_dir, "sluice-bench.toml")) as f:
            cfg = f.read()
        cfg = re.sub(r"(?m)^max_concurrent = \d+", f"max_concurrent = {args.fixed}", cfg)
        cfg = re.sub(r"(?m)^min_concurrent = \d+", f"min_concurrent = {args.fixed}", cfg)
        with open(os.path.join(out, "sluice-bench.toml"), "w") as f:
            f.write(cfg)
        bench_dir = out
    os.environ["SLUICE_LOG"] = "warn,sluice::admission::gate=debug"
    log = os.path.join(out, "sluice.log")
    if os.path.exists(log):
        os.remove(log)
    p = Procs(bin_dir, bench_dir, out)
    try:
        p.app(spread=args.spread)
        port, _ = p.target(args.target)
        obs = f"http://{HOST}:{p.sluice_obs_port}/api/v1/performance/concurrency"
        stats = f"http://{HOST}:{p.app_port}/_stats"
        p.load(port, 50, 3, os.path.join(out, "warmup.json"), 3)
        samples, stop = [], threading.Event()

        def sample():
            while not stop.wait(0.1):
                try:
                    c = {}
                    if args.target == "sluice":
                        with urllib.request.urlopen(obs, timeout=2) as r:
                            c = json.load(r)["classes"]["app"]
                    with urllib.request.urlopen(stats, timeout=2) as r:
                        a = json.load(r)
                except (OSError, ValueError, KeyError):
                    continue
                samples.append((c.get("limit", {}).get("current"), c.get("active", 0),
                                a["in_service"], a["queued"]))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        if args.slow_at is not None:
            def slow():
                time.sleep(args.slow_at)
                p.control({"service_ms": args.slow_ms})
            threading.Thread(target=slow, daemon=True).start()
        rep = p.load(port, 200, args.duration, os.path.join(out, "load.json"), 10)
        stop.set()
        th.join(timeout=5)
        final = None
        if args.target == "sluice":
            with urllib.request.urlopen(obs, timeout=2) as r:
                final = json.load(r)
    finally:
        p.stop_all()

    ok = sum(s["successes"] for s in rep["streams"])
    print(f"{args.target}, spread {args.spread}, fixed {args.fixed}: "
          f"goodput {ok / args.duration:.1f} req/s (capacity 400)")
    for s in rep["streams"]:
        p99 = s["success_latency_us"]["p99"] / 1000 if s["successes"] else None
        print(f"  {s['name']}: {s['successes']} of {s['sent']} served, p99 {p99} ms")
    crit = next((s for s in rep["streams"] if s["name"] == "critical"), None)
    if crit:
        print("  critical p99 ms per second: " + " ".join(
            f"{sec['success_p99_us'] / 1000:.0f}" if sec["successes"] else "-"
            for sec in crit["series"]))
    steady = samples[20:]
    if steady:
        mean = lambda i: sum(s[i] for s in steady) / len(steady)  # noqa: E731
        print(f"  means: sluice in flight {mean(1):.1f}, app in service {mean(2):.1f}, "
              f"app queued {mean(3):.2f}")
        limits = sorted(s[0] for s in steady if s[0] is not None)
        if limits:
            q = lambda f: limits[int(f * (len(limits) - 1))]  # noqa: E731
            print(f"  limit p10/p50/p90: {q(0.1)} {q(0.5)} {q(0.9)}")
    if os.path.exists(log):
        caps = {}
        with open(log, errors="replace") as f:
            windows = [dict(FIELD.findall(ANSI.sub("", m.group(0))))
                       for m in map(WINDOW.search, f) if m]
        # Past the warm-up (3 s of 100 ms windows).
        for w in windows[30:]:
            cap = int(w.get("limit", 0)) - int(w.get("lane", 0))
            caps[cap] = caps.get(cap, 0) + 1
        n = sum(caps.values())
        if n:
            print("  windows by the non-critical limit (limit - lane): " + " ".join(
                f"{k}: {100 * v / n:.0f} %" for k, v in sorted(caps.items())))
    if final:
        print(f"  refusals: {final['classes']['app'].get('rejections')}")


if __name__ == "__main__":
    main()
