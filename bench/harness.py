"""Processes for bench/run.sh: the simulated app, HAProxy, sluice, the load generator.

Every process started here is recorded and stopped by `Procs.stop_all()` (run.sh's
trap and the scenarios' `finally`). Only 127.0.0.1 is ever targeted.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

HOST = "127.0.0.1"
PRIORITIES = ["critical", "high", "normal", "low"]
# HAProxy: lower class = dequeued first.
HAPROXY_CLASS = {"critical": -20, "high": -10, "normal": 0, "low": 10}


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


def cpu_seconds(pid):
    """User and system CPU seconds `pid` has used so far, all its threads together."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its closing paren.
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tcp_out_segments():
    """TCP segments sent by the whole machine so far (`/proc/net/snmp`, Tcp OutSegs)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutSegs")])


class Procs:
    """Starts and owns the benchmark's processes."""

    def __init__(self, bin_dir, bench_dir, work_dir):
        self.bin_dir = bin_dir
        self.bench_dir = bench_dir
        self.work_dir = work_dir
        self.live = []
        self.app_port = free_port()
        self.haproxy_port = free_port()
        self.haproxy_prio_port = free_port()
        self.haproxy_fwd_port = free_port()
        self.sluice_port = free_port()
        self.sluice_obs_port = free_port()
        # Prepended to every load generator command: main.py's GeneratorPriority sets it
        # to `chrt -f 1` so the generator's sends keep their schedule.
        self.load_prefix = []

    def _spawn(self, name, args):
        log = open(os.path.join(self.work_dir, f"{name}.log"), "ab")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.live.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in list(self.live):
            self.stop(p)

    def bench(self, *args):
        return [os.path.join(self.bin_dir, "sluice-bench"), "--threads", "1", *args]

    def app(self, capacity=20, service_ms=50, mode="normal", spread=0.0):
        p = self._spawn("app", self.bench(
            "app", "--addr", f"{HOST}:{self.app_port}", "--capacity", str(capacity),
            "--service-ms", str(service_ms), "--mode", mode, "--spread", str(spread)))
        wait_port(self.app_port)
        return p

    def haproxy(self, prio_maxconn=20):
        """One HAProxy, three frontends: plain (no queueing), plain plus the header work
        sluice does on every request (`fwd`), and priority queuing."""
        rules = "\n".join(
            f"    http-request set-priority-class int({c}) if {{ req.hdr(x-priority) -m str {n} }}"
            for n, c in HAPROXY_CLASS.items())
        cfg = f"""global
    # HAProxy reserves 2 descriptors per connection (maxsock = 2 x maxconn + 15);
    # with this machine's hard limit of 20,000 descriptors 9,990 is its ceiling.
    maxconn 9990
    ulimit-n 20000
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout queue 5s
    timeout http-keep-alive 30s
frontend plain
    bind {HOST}:{self.haproxy_port}
    default_backend app_plain
frontend fwd
    bind {HOST}:{self.haproxy_fwd_port}
    # What sluice adds to every request and response: X-Forwarded-For (appended),
    # X-Forwarded-Proto (unless sent), X-Request-Id (unless sent, and in the response).
    option forwardfor
    http-request set-header X-Forwarded-Proto http unless {{ req.hdr(x-forwarded-proto) -m found }}
    unique-id-format %{{+X}}o%ci%cp%fi%fp%Ts%rt%pid
    http-request set-header X-Request-Id %[unique-id] unless {{ req.hdr(x-request-id) -m found }}
    http-response set-header X-Request-Id %[unique-id]
    default_backend app_plain
frontend prio
    bind {HOST}:{self.haproxy_prio_port}
    default_backend app_prio
backend app_plain
    server app {HOST}:{self.app_port} maxconn 20000 pool-max-conn 100
backend app_prio
{rules}
    server app {HOST}:{self.app_port} maxconn {prio_maxconn}
"""
        path = os.path.join(self.work_dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        p = self._spawn("haproxy", ["haproxy", "-db", "-f", path])
        wait_port(self.haproxy_port)
        wait_port(self.haproxy_prio_port)
        wait_port(self.haproxy_fwd_port)
        return p

    def sluice(self):
        with open(os.path.join(self.bench_dir, "sluice-bench.toml")) as f:
            cfg = f.read()
        cfg = (cfg.replace("127.0.0.1:18080", f"{HOST}:{self.sluice_port}")
               .replace("127.0.0.1:19090", f"{HOST}:{self.sluice_obs_port}")
               .replace("127.0.0.1:18000", f"{HOST}:{self.app_port}"))
        path = os.path.join(self.work_dir, "sluice.toml")
        with open(path, "w") as f:
            f.write(cfg)
        p = self._spawn("sluice", [os.path.join(self.bin_dir, "sluice"), "--config", path])
        wait_port(self.sluice_port)
        return p

    def target(self, name):
        """Start the proxy `name` needs (the app must run); return (port, process)."""
        if name == "direct":
            return self.app_port, None
        if name in ("haproxy", "haproxy-prio"):
            p = self.haproxy()
            return (self.haproxy_port if name == "haproxy" else self.haproxy_prio_port), p
        if name == "sluice":
            return self.sluice_port, self.sluice()
        raise ValueError(name)

    def control(self, update):
        body = json.dumps(update).encode()
        req = urllib.request.Request(f"http://{HOST}:{self.app_port}/_control", data=body,
                                     method="POST", headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def app_stats(self):
        with urllib.request.urlopen(f"http://{HOST}:{self.app_port}/_stats", timeout=5) as r:
            return json.load(r)

    def load_cmd(self, port, rates, duration_s, json_path, timeout_s):
        args = ["load", "--target", f"{HOST}:{port}", "--duration-s", str(duration_s),
                "--timeout-s", str(timeout_s), "--json", json_path]
        for prio in PRIORITIES:
            rate = rates[prio] if isinstance(rates, dict) else rates
            args += ["--stream", f"name={prio},rate={rate},path=/work,header=x-priority:{prio}"]
        return self.load_prefix + self.bench(*args)

    def load(self, port, rates, duration_s, json_path, timeout_s=10):
        """Run the load generator to the end; return its JSON report."""
        cmd = self.load_cmd(port, rates, duration_s, json_path, timeout_s)
        out = os.path.join(self.work_dir, "load.log")
        with open(out, "ab") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True,
                           timeout=duration_s + timeout_s + 30)
        with open(json_path) as f:
            return json.load(f)

    def wrk(self, port, duration_s):
        out = subprocess.run(
            ["wrk", "-t1", "-c64", f"-d{duration_s}s", "--latency", f"http://{HOST}:{port}/"],
            capture_output=True, text=True, check=True, timeout=duration_s + 30).stdout
        return parse_wrk(out)


def _ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {m.group(1): _ms(m.group(2), m.group(3))
           for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
    total = re.search(r"(\d+) requests in", text)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors:.*", text)
    return {"rps": rps, "requests": int(total.group(1)) if total else 0,
            "p50_ms": pct.get("50"), "p99_ms": pct.get("99"),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sock.group(0) if sock else ""}


def sluice_counts(obs_port, klass="app"):
    """sluice's cumulative outcomes and refusal reasons for `klass`, flattened into one
    dict (`outcome:NAME`, `rejection:NAME`), for explaining non-2xx answers."""
    url = f"http://{HOST}:{obs_port}/api/v1/performance/concurrency"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            doc = json.load(r)
    except (OSError, ValueError):
        return {}
    c = doc.get("classes", {}).get(klass, {})
    out = {f"outcome:{k}": v for k, v in c.get("outcomes", {}).items()}
    out.update({f"rejection:{k}": v for k, v in c.get("rejections", {}).items()})
    return out


def counts_delta(before, after):
    """The non-zero growth of each count (outcomes other than success)."""
    return {k: after[k] - before.get(k, 0) for k in after
            if k != "outcome:success" and after[k] - before.get(k, 0)}


class SluiceSampler:
    """Polls sluice's JSON endpoint twice a second during a run: the class's adaptive
    limit, in-flight and queued over time, and the final state (rejection reasons)."""

    def __init__(self, obs_port, klass="app"):
        import threading
        self.url = f"http://{HOST}:{obs_port}/api/v1/performance/concurrency"
        self.klass = klass
        self.samples = []
        self.last = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.monotonic()
        self.thread.start()

    def _fetch(self):
        with urllib.request.urlopen(self.url, timeout=2) as r:
            return json.load(r)

    def _loop(self):
        while not self.stop_event.wait(0.5):
            try:
                doc = self._fetch()
            except (OSError, ValueError):
                continue
            c = doc.get("classes", {}).get(self.klass, {})
            self.samples.append({"t": round(time.monotonic() - self.t0, 2),
                                 "limit": c.get("limit", {}).get("current"),
                                 "active": c.get("active"), "queued": c.get("queued_total")})
            self.last = doc

    def finish(self, path):
        self.stop_event.set()
        self.thread.join(timeout=5)
        with open(path, "w") as f:
            json.dump({"samples": self.samples, "final": self.last}, f, indent=1)
        klass = (self.last or {}).get("classes", {}).get(self.klass, {})
        limits = sorted(s["limit"] for s in self.samples if s["limit"] is not None)
        return {"limit_min": limits[0] if limits else None,
                "limit_median": limits[len(limits) // 2] if limits else None,
                "limit_max": limits[-1] if limits else None,
                "rejections": klass.get("rejections", {}),
                "critical_rejections": klass.get("rejections_by_priority", {}).get("critical", {})}
