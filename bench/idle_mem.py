"""Memory per idle keep-alive connection, for sluice alone, in steps; then how much of
it comes back after the connections close. Quicker than scenario 1 of run.sh (no
HAProxy, no throughput rounds) and with more detail (smaps_rollup).

    cargo build --release --bins
    python3 bench/idle_mem.py [--bin target/release] [--conns 1000,5000,10000]

Needs `ulimit -n` above the largest step (run.sh raises it; do `ulimit -n 20000` first).
The warm-up is 2 s of wrk at 64 connections, as scenario 1's load leaves sluice.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import harness
import idle_conns


def smaps_kib(pid, field):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--conns", default="1000,5000,10000")
    ap.add_argument("--settle-s", type=float, default=15.0)
    args = ap.parse_args()
    steps = [int(x) for x in args.conns.split(",")]
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    work = tempfile.mkdtemp(prefix="sluice-idle-mem-")
    p = harness.Procs(os.path.abspath(args.bin), bench_dir, work)
    try:
        p.app(mode="fast")
        slu = p.sluice()
        time.sleep(0.5)
        print(f"at start: {harness.rss_kib(slu.pid)} KiB")
        subprocess.run(["wrk", "-t1", "-c64", "-d2s", f"http://{harness.HOST}:{p.sluice_port}/"],
                       capture_output=True, check=True, timeout=60)
        time.sleep(0.5)
        base = harness.rss_kib(slu.pid)
        print(f"after warm-up: {base} KiB")
        socks, failed = [], 0
        print("| idle conns | VmRSS KiB | anon KiB | per conn KB |\n|---|---|---|---|")
        for n in steps:
            more, bad = idle_conns.open_idle(p.sluice_port, n - len(socks))
            socks += more
            failed += bad
            time.sleep(1.0)
            rss = harness.rss_kib(slu.pid)
            per = (rss - base) * 1.024 / max(len(socks), 1)
            print(f"| {len(socks)} | {rss} | {smaps_kib(slu.pid, 'Anonymous')} | {per:.2f} |")
        if failed:
            print(f"failed to open: {failed}")
        idle_conns.close_all(socks)
        t0 = time.monotonic()
        for t in (1.0, 5.0, args.settle_s):
            time.sleep(max(0.0, t0 + t - time.monotonic()))
            print(f"{t:.0f} s after close: {harness.rss_kib(slu.pid)} KiB")
    finally:
        p.stop_all()


if __name__ == "__main__":
    sys.exit(main())
