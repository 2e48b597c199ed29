#!/usr/bin/env python3
"""How late the load generator's own sends are, with and without real-time scheduling:
what run.sh's `--gen-sched` chooses between (not part of run.sh's tables).

    cargo build --release --bins
    python3 bench/gen_lag.py [--bin target/release] [--rounds 3] [--seconds 10]

The app in fast mode, sluice in front of it (bench/sluice-bench.toml); each round runs
`sluice-bench load` at 4 x 50 req/s against `direct` and `sluice`, first with normal
scheduling, then under `chrt -f 1`, idle vCPUs polling as in run.sh. Prints, per run,
the worst stream's send lag p99, p99.9 and max (intended send to the start of the
send) and its success latency p99 and max (from the intended send). `chrt -f 1` and
holding /dev/cpu_dma_latency need root; without it the script warns and runs only the
normal-scheduling half, halting.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from main import GeneratorPriority, IdlePolling  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"),
                                                  "release"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory(prefix="gen-lag-") as work:
        run(args, bench_dir, work)


def run(args, bench_dir, work):
    report = os.path.join(work, "load.json")
    fifo = GeneratorPriority(True).prefix
    with IdlePolling(True) as idle:
        print(f"idle vCPUs: {idle.state}")
        p = harness.Procs(args.bin, bench_dir, work)
        try:
            p.app(mode="fast")
            p.sluice()
            print("sched  target  | send lag p99 p99.9   max µs | success p99   max µs")
            for _ in range(args.rounds):
                # Without root (GeneratorPriority warned) only the normal runs.
                for prefix in ([[], fifo] if fifo else [[]]):
                    for name, port in (("direct", p.app_port), ("sluice", p.sluice_port)):
                        cmd = prefix + p.load_cmd(port, 50, args.seconds, report, 5)
                        subprocess.run(cmd, check=True, capture_output=True,
                                       timeout=args.seconds + 30)
                        with open(report) as f:
                            streams = json.load(f)["streams"]
                        lag = [s["send_lag_us"] for s in streams]
                        ok = [s["success_latency_us"] for s in streams]
                        print(f"{'fifo' if prefix else 'other':6} {name:7} | "
                              f"{max(x['p99'] for x in lag):12} {max(x['p999'] for x in lag):5}"
                              f" {max(x['max'] for x in lag):5} | "
                              f"{max(x['p99'] for x in ok):11} {max(x['max'] for x in ok):5}",
                              flush=True)
        finally:
            p.stop_all()


if __name__ == "__main__":
    main()
