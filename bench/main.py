"""bench/run.sh's driver: run every scenario, write results.md, draw plots if it can."""

import argparse
import os
import platform
import signal
import subprocess
import sys
import time

import harness
import scenarios


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    return (f"- `nproc`: {sh('nproc')}\n- kernel: {platform.release()}\n"
            f"- haproxy: {sh('haproxy -v | head -1')}\n- wrk: {sh('wrk -v 2>&1 | head -1')}\n"
            f"- memory (`free -h`):\n\n```\n{sh('free -h')}\n```\n")


class IdlePolling:
    """Hold the CPU latency request at 0 µs (`/dev/cpu_dma_latency`) while it is open.

    With it held, an idle vCPU polls instead of halting, so a thread that a timer or a
    packet wakes runs at once rather than after the hypervisor schedules its vCPU back
    in (up to 1 ms at p99 on these VMs, `haltpoll` with polling off). cyclictest does
    the same, as does tuned's latency-performance profile. It holds for every target
    alike; closing the file drops the request.
    """

    PATH = "/dev/cpu_dma_latency"

    def __init__(self, wanted):
        self.wanted = wanted
        self.file = None
        self.state = "halting (`--idle halt`)" if not wanted else None

    def __enter__(self):
        if self.wanted:
            try:
                self.file = open(self.PATH, "wb", buffering=0)
                self.file.write((0).to_bytes(4, sys.byteorder, signed=True))
                self.state = f"polling (`{self.PATH}` held at 0 for the whole run)"
            except OSError as e:
                if self.file is not None:
                    self.file.close()
                    self.file = None
                self.state = f"halting (could not hold `{self.PATH}`: {e.strerror})"
                print(f"bench: warning: idle vCPUs will halt: {self.PATH}: {e.strerror}",
                      file=sys.stderr)
        return self

    def __exit__(self, *_):
        if self.file is not None:
            self.file.close()


class GeneratorPriority:
    """Run the open-loop load generator under SCHED_FIFO priority 1 (`chrt -f 1`).

    Its latencies count from each request's intended send time, so its own lateness is
    measurement error charged to the target. Under SCHED_OTHER on 2 busy vCPUs a woken
    generator thread now and then waits 1-4 ms for a CPU (for every target, `direct`
    included): a few such sends in a 500-request stream are its p99. As a real-time
    task it runs as soon as it wakes. It is light (at most 800 requests/s), applies to
    every target alike, and `wrk`, the app and the proxies keep normal scheduling.
    """

    def __init__(self, wanted):
        self.prefix = []
        self.state = "normal scheduling (`--gen-sched other`)"
        if not wanted:
            return
        cmd = ["chrt", "-f", "1"]
        try:
            ok = subprocess.run(cmd + ["true"], capture_output=True).returncode == 0
        except OSError:
            ok = False
        if ok:
            self.prefix = cmd
            self.state = "SCHED_FIFO priority 1 (`chrt -f 1`)"
        else:
            self.state = "normal scheduling (`chrt -f 1` failed: needs root and util-linux)"
            print("bench: warning: the load generator runs with normal scheduling: "
                  "`chrt -f 1` failed", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--only", default="", help="comma-separated scenario numbers")
    ap.add_argument("--idle", choices=["poll", "halt"], default="poll",
                    help="poll: hold /dev/cpu_dma_latency at 0 so idle CPUs poll (default)")
    ap.add_argument("--gen-sched", choices=["fifo", "other"], default="fifo",
                    help="fifo: run the load generator under chrt -f 1 (default)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    procs = harness.Procs(args.bin, bench_dir, args.out)
    gen = GeneratorPriority(args.gen_sched == "fifo")
    procs.load_prefix = gen.prefix
    # run.sh's trap sends SIGTERM: unwind through `finally` so every process stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = scenarios.Ctx(procs, args.out, args.quick)
    steps = [("1", scenarios.passthrough), ("2", scenarios.overload),
             ("3", scenarios.capacity_cut), ("4", scenarios.app_failure),
             ("5", scenarios.slower_app)]
    only = set(filter(None, args.only.split(",")))
    started = time.monotonic()
    sections = []
    idle = IdlePolling(args.idle == "poll")
    with idle:
        try:
            for key, fn in steps:
                if only and key not in only:
                    continue
                t0 = time.monotonic()
                print(f"[bench] scenario {key}: {fn.__name__}", flush=True)
                sections.append(fn(ctx))
                print(f"[bench] scenario {key} done in {time.monotonic() - t0:.0f} s", flush=True)
        finally:
            procs.stop_all()
    mode = "--quick" if args.quick else "full"
    head = (f"# sluice benchmark results ({mode})\n\nGenerated by `bench/run.sh"
            f"{' --quick' if args.quick else ''}` in {time.monotonic() - started:.0f} s "
            f"(scenarios only, build excluded).\n\n{machine()}\n- idle vCPUs: {idle.state}\n"
            f"- load generator: {gen.state}\n\n")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(head + "\n".join(sections))
    print(f"[bench] wrote {os.path.join(args.out, 'results.md')}")


if __name__ == "__main__":
    main()
