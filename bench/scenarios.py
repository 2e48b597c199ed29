"""The four benchmark scenarios of bench/run.sh. Each returns a Markdown section and
leaves its raw reports in the output folder. Targets alternate run by run; every run
starts a fresh app and a fresh proxy, so no run inherits another's queue or limit."""

import json
import os
import subprocess
import time

import harness
import idle_conns
from summary import (OVERLOAD_HEADERS, fmt, goodput, overload_rows, per_second,
                     recovery_s, refusal_p99, send_lag_p99, series_p99_ms, stream,
                     success_p, table)

PEERS = ["direct", "haproxy-prio", "sluice"]
# Seconds after closing the idle connections at which memory is read the second time.
CLOSE_SETTLE_S = 15.0
CAPACITY_RPS = 20 / 0.050


class Ctx:
    def __init__(self, procs, out, quick):
        self.procs, self.out, self.quick = procs, out, quick
        self.unloaded_p99 = {}
        self.sluice_notes = {}

    def path(self, name):
        return os.path.join(self.out, name)

    def save_json(self, name, data):
        with open(self.path(name), "w") as f:
            json.dump(data, f, indent=1)

    def run(self, target, fn, label, **app):
        """Fresh app (+ proxy) for one run; stop both afterwards. Against sluice, its
        adaptive limit is sampled and summarised in `self.sluice_notes[label]`."""
        p = self.procs
        app_proc = p.app(**app)
        proxy = None
        try:
            port, proxy = p.target(target)
            time.sleep(0.3)
            sampler = harness.SluiceSampler(p.sluice_obs_port) if target == "sluice" else None
            result = fn(port)
            if sampler is not None:
                self.sluice_notes[label] = sampler.finish(self.path(f"sluice-state-{label}.json"))
            return result
        finally:
            if proxy is not None:
                p.stop(proxy)
            p.stop(app_proc)


def passthrough(ctx):
    p, quick = ctx.procs, ctx.quick
    rounds, dur = (1, 2) if quick else (5, 10)
    # 10,000 asked for; HAProxy cannot hold more than 9,990 under a 20,000-descriptor
    # limit (see harness.py), so both proxies get the same 9,900.
    n_idle = 1000 if quick else 9900
    app = p.app(mode="fast")
    hap = p.haproxy()
    slu = p.sluice()
    time.sleep(0.5)
    rss = {"sluice": {"start": harness.rss_kib(slu.pid)},
           "haproxy": {"start": harness.rss_kib(hap.pid)}}
    ports = {"direct": p.app_port, "haproxy": p.haproxy_port,
             "haproxy-fwd": p.haproxy_fwd_port, "sluice": p.sluice_port}
    # The process whose CPU a round costs: the proxy (HAProxy serves both its frontends).
    pids = {"direct": None, "haproxy": hap.pid, "haproxy-fwd": hap.pid, "sluice": slu.pid}
    results = {t: [] for t in ports}
    causes = []
    order = list(ports.items())
    for i in range(rounds):
        # Forwards, then backwards: a machine speeding up or slowing down over the rounds
        # weighs on every target alike instead of on the last in line.
        for t, port in (order if i % 2 == 0 else order[::-1]):
            before = harness.sluice_counts(p.sluice_obs_port) if t == "sluice" else None
            cpu0 = harness.cpu_seconds(pids[t]) if pids[t] else None
            segs0 = harness.tcp_out_segments()
            r = p.wrk(port, dur)
            # The whole machine's, so wrk's and the app's too: 2 a request direct (request
            # and response), 4 through a proxy that adds no packets of its own.
            r["tcp_segments"] = (harness.tcp_out_segments() - segs0) / max(r["requests"], 1)
            if cpu0 is not None:
                cpu1 = harness.cpu_seconds(pids[t])
                # CPU per request: the proxy's own cost, a second view of the round.
                r["cpu_us"] = [(b - a) * 1e6 / max(r["requests"], 1) for a, b in zip(cpu0, cpu1)]
            results[t].append(r)
            if before is not None:
                causes.append(harness.counts_delta(before, harness.sluice_counts(p.sluice_obs_port)))
    for name, proc in (("sluice", slu), ("haproxy", hap)):
        rss[name]["after_load"] = harness.rss_kib(proc.pid)
    for name, proc, port in (("sluice", slu, p.sluice_port), ("haproxy", hap, p.haproxy_port)):
        socks, failed = idle_conns.open_idle(port, n_idle)
        time.sleep(1.0)
        rss[name]["held"] = len(socks)
        rss[name]["failed"] = failed
        rss[name]["with_idle"] = harness.rss_kib(proc.pid)
        idle_conns.close_all(socks)
        # sluice's allocator gives freed pages back after a 10 s decay: look at 2 s and
        # again once that has passed.
        time.sleep(2.0)
        rss[name]["after_close"] = harness.rss_kib(proc.pid)
        time.sleep(1.0 if quick else CLOSE_SETTLE_S - 2.0)
        rss[name]["after_close_settled"] = harness.rss_kib(proc.pid)
    for proc in (slu, hap, app):
        p.stop(proc)

    def median(t, k):
        return _median([r[k] for r in results[t]])

    rows = []
    for t in ports:
        rps, p50, p99 = median(t, "rps"), median(t, "p50_ms"), median(t, "p99_ms")
        rows.append([t, rps, p50, p99, rps / median("haproxy", "rps"),
                     rps / median("haproxy-fwd", "rps"), rps / median("direct", "rps"),
                     ", ".join(f"{r['rps']:.0f}" for r in results[t]),
                     ", ".join(f"{r['p99_ms']:.2f}" for r in results[t]),
                     sum(r["non_2xx"] for r in results[t])])
    md = (f"## 1. Pass-through overhead\n\nApp in `fast` mode; `wrk -t1 -c64 -d{dur}s`, "
          f"{rounds} round(s), targets interleaved (in turn, the order reversed every other "
          "round). Medians, then every round. `haproxy` "
          "forwards as it is; `haproxy-fwd` also does the header work sluice does on every "
          "request (X-Forwarded-For, X-Forwarded-Proto, X-Request-Id both ways).\n\n")
    md += table(["target", "req/s", "p50 ms", "p99 ms", "× haproxy", "× haproxy-fwd", "× direct",
                 "req/s by round", "p99 ms by round", "non-2xx"], rows)
    cpu = cpu_table(results, dur)
    md += cpu
    md += ("" if cpu else "\n") + (
        "TCP segments sent per request by the whole machine (`/proc/net/snmp` OutSegs over "
        "each round, divided by its requests; medians): "
        + ", ".join(f"{t} {median(t, 'tcp_segments'):.2f}" for t in ports) + "\n")
    md += "\nAdded p99 over direct (median): " + ", ".join(
        f"{t} {median(t, 'p99_ms') - median('direct', 'p99_ms'):+.2f} ms"
        for t in ("haproxy", "haproxy-fwd", "sluice")) + "\n\n"
    if any(causes):
        md += ("sluice's own count of what was not a success, by round: " +
               "; ".join(", ".join(f"{k} {v}" for k, v in c.items()) or "none" for c in causes)
               + "\n\n")
    md += (f"Memory (VmRSS, MiB), {n_idle} idle keep-alive connections each having sent "
           "one request:\n\n")
    settle = 3 if quick else int(CLOSE_SETTLE_S)
    md += table(["proxy", "at start", "after load", f"with {n_idle} idle", "per conn KB",
                 "2 s after close", f"{settle} s after close", "held/failed"],
                [[n, r["start"] / 1024, r["after_load"] / 1024, r["with_idle"] / 1024,
                  (r["with_idle"] - r["after_load"]) / max(r["held"], 1),
                  r["after_close"] / 1024, r["after_close_settled"] / 1024,
                  f"{r['held']}/{r['failed']}"] for n, r in rss.items()])
    ctx.save_json("passthrough.json", {"wrk": results, "rss_kib": rss, "sluice_not_success": causes})
    return md


def _median(vals):
    """The middle value (the upper one of an even count), None for none."""
    vals = sorted(vals)
    return vals[len(vals) // 2] if vals else None


def cpu_table(results, dur):
    """The proxies' CPU per request, user and system, medians over the rounds."""
    cpu = {t: [r["cpu_us"] for r in rs if "cpu_us" in r] for t, rs in results.items()}
    cpu = {t: v for t, v in cpu.items() if v}
    if not cpu:
        return ""
    total = {t: _median([u + s for u, s in v]) for t, v in cpu.items()}
    base = total.get("haproxy")
    rows = [[t, _median([u for u, _ in v]), _median([s for _, s in v]), total[t],
             f"{total[t] / base:.2f}" if base else "-",
             ", ".join(f"{u + s:.1f}" for u, s in v)] for t, v in cpu.items()]
    return ("\nCPU per request of the proxy process (`/proc/PID/stat` user and system time "
            f"over each {dur} s round, divided by the round's requests; medians):\n\n"
            + table(["proxy", "user µs", "system µs", "total µs", "× haproxy",
                     "total µs by round"], rows) + "\n")


def warmed(ctx, target, rate, secs, name, tmo):
    """A run that first sends the unloaded load (4 x 50 req/s) for a few seconds, not
    measured, so that every target starts warm: pooled connections open, and sluice's
    adaptive limit past its cold start from `min_concurrent` (slow start takes about
    0.3 s; that cold start is not what these scenarios measure)."""
    warm = 1 if ctx.quick else 3

    def go(port):
        ctx.procs.load(port, 50, warm, ctx.path(f"warmup-{name}"), tmo)
        return ctx.procs.load(port, rate, secs, ctx.path(name), tmo)
    return go


def unloaded_secs(ctx):
    """Length of the unloaded run (and its client timeout), in seconds."""
    return 3 if ctx.quick else 10


def unloaded_run(ctx, target):
    """The unloaded run (4 x 50 req/s) against `target`; keeps its critical p99, the
    "unloaded p99" the overload and cut targets refer to."""
    secs = tmo = unloaded_secs(ctx)
    rep = ctx.run(target, warmed(ctx, target, 50, secs, f"unloaded-{target}.json", tmo),
                  "unloaded")
    ctx.unloaded_p99[target] = success_p(stream(rep, "critical"), "p99")
    return rep


def unloaded_p99(ctx, target):
    """`target`'s critical p99 without overload: scenario 2's unloaded run, or, when
    scenario 2 did not run in this invocation (`--only 3`), the same run now."""
    if target not in ctx.unloaded_p99:
        unloaded_run(ctx, target)
    return ctx.unloaded_p99[target]


def overload(ctx):
    dur_u = unloaded_secs(ctx)
    dur_o, tmo = (5, 3) if ctx.quick else (20, 10)
    skip = 1 if ctx.quick else 2
    unloaded, over = [], []
    for t in PEERS:
        c = stream(unloaded_run(ctx, t), "critical")
        unloaded.append([t, success_p(c, "p50"), success_p(c, "p99"),
                         100.0 * c["successes"] / max(c["sent"], 1)])
    gp_rows = []
    for t in PEERS:
        rep = ctx.run(t, warmed(ctx, t, 200, dur_o, f"overload-{t}.json", tmo), "overload")
        rows, gp, pct = overload_rows(t, rep, CAPACITY_RPS, skip, dur_o - 1)
        over += rows
        c = stream(rep, "critical")
        bound = 2 * (ctx.unloaded_p99[t] or 0)
        p99 = success_p(c, "p99")
        gp_rows.append([t, gp, pct, p99, bound, "yes" if p99 is not None and p99 <= bound else "no"])
    md = ("## 2. Overload at 2×\n\nApp capacity 20 × 50 ms = 400 req/s. "
          f"Unloaded: 4 × 50 req/s for {dur_u} s. Overload: 4 × 200 req/s for {dur_o} s, "
          f"client timeout {tmo} s. Each run starts with {1 if ctx.quick else 3} s of the "
          "unloaded load, not measured, so every target starts warm.\n\nUnloaded, critical stream:\n\n")
    md += table(["target", "p50 ms", "p99 ms", "served %"], unloaded)
    md += "\nOverload, per priority:\n\n" + table(OVERLOAD_HEADERS, over)
    md += (f"\nGoodput over seconds {skip}..{dur_o - 1} and critical p99 against 2× unloaded:\n\n")
    md += table(["target", "goodput req/s", "% of capacity", "critical p99 ms",
                 "2× unloaded p99 ms", "within"], gp_rows)
    md += ("\nGoodput counts successes by intended send second. For `direct` that includes "
           "answers that came seconds late (see its p99), so it can exceed capacity.\n")
    md += notes(ctx, ["unloaded", "overload"])
    return md


def notes(ctx, labels):
    out = ""
    for label in labels:
        n = ctx.sluice_notes.get(label)
        if not n:
            continue
        rej = ", ".join(f"{k} {v}" for k, v in n["rejections"].items() if v) or "none"
        crit = ", ".join(f"{k} {v}" for k, v in n["critical_rejections"].items() if v) or "none"
        out += (f"\nsluice, {label} run: adaptive limit min/median/max "
                f"{n['limit_min']}/{n['limit_median']}/{n['limit_max']} (sampled every 0.5 s); "
                f"refusals by reason: {rej}; critical refusals: {crit}.\n")
    return out


def capacity_cut(ctx):
    dur, cut, tmo = (8, 3, 3) if ctx.quick else (30, 10, 10)
    rows = []
    for t in PEERS:
        def go(port, t=t):
            path = ctx.path(f"cut-{t}.json")
            cmd = ctx.procs.load_cmd(port, 100, dur, path, tmo)
            with open(ctx.path("load.log"), "ab") as log:
                gen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
                ctx.procs.live.append(gen)
                time.sleep(cut)
                ctx.procs.control({"capacity": 7})
                if gen.wait(timeout=dur + tmo + 30) != 0:
                    raise RuntimeError(f"load generator failed against {t}")
                ctx.procs.live.remove(gen)
            with open(path) as f:
                return json.load(f)
        rep = ctx.run(t, go, "cut")
        ok = per_second(rep, "successes")
        bound = 2 * (unloaded_p99(ctx, t) or 0)
        p99 = series_p99_ms(rep, "critical")
        rec = recovery_s(p99, cut, bound, dur)
        crit = stream(rep, "critical")
        rows.append([t, goodput(rep, 1, cut), goodput(rep, cut + 2, dur),
                     100.0 * crit["successes"] / max(crit["sent"], 1), bound,
                     fmt(rec) + " s" if rec is not None else "never",
                     " ".join(fmt(v, 0) for v in p99[:dur]),
                     " ".join(str(v) for v in ok[:dur])])
    md = (f"## 3. Capacity cut\n\n4 × 100 req/s (1× the initial 400 req/s) for {dur} s; "
          f"at {cut} s the app's capacity goes from 20 to 7 (140 req/s).\n\n")
    md += table(["target", "goodput before", f"goodput after (from {cut + 2} s)",
                 "critical served %", "2× unloaded p99 ms", "critical p99 back in",
                 "critical p99 ms per second", "successes per second"], rows)
    md += notes(ctx, ["cut"])
    return md


def app_failure(ctx):
    phases = ([("normal", 2), ("fail500", 2), ("reset", 2), ("normal", 3)] if ctx.quick
              else [("normal", 5), ("fail500", 10), ("reset", 10), ("normal", 10)])
    tmo = 3 if ctx.quick else 5
    rows, recov = [], []
    for t in PEERS:
        def go(port, t=t):
            out = []
            for i, (mode, secs) in enumerate(phases):
                ctx.procs.control({"mode": mode})
                before = ctx.procs.app_stats()
                rep = ctx.procs.load(port, 50, secs, ctx.path(f"failure-{t}-{i}-{mode}.json"), tmo)
                after = ctx.procs.app_stats()
                reached = (after["received"] - before["received"]
                           - (after["health_checks"] - before["health_checks"]))
                out.append((mode, secs, rep, reached))
            return out
        for i, (mode, secs, rep, reached) in enumerate(ctx.run(t, go, "failure")):
            sent = sum(s["sent"] for s in rep["streams"])
            ok = sum(s["successes"] for s in rep["streams"])
            refused = sum(s["refusals"]["total"] for s in rep["streams"])
            errs = sum(s["client_errors"]["total"] for s in rep["streams"])
            p99s = [refusal_p99(s) for s in rep["streams"] if refusal_p99(s) is not None]
            sent_p99s = [v for v in (refusal_p99(s, "refusal_from_send_us")
                                     for s in rep["streams"]) if v is not None]
            lag = max(send_lag_p99(s) or 0.0 for s in rep["streams"])
            rows.append([t, f"{i + 1}: {mode}", secs, sent, ok, refused, errs,
                         max(p99s) if p99s else None,
                         max(sent_p99s) if sent_p99s else None, lag, reached])
            if i == len(phases) - 1:
                sent_s = per_second(rep, "sent")
                ok_s = per_second(rep, "successes")
                first = next((j for j, (a, b) in enumerate(zip(sent_s, ok_s)) if a and b >= 0.99 * a), None)
                recov.append([t, fmt(float(first)) + " s" if first is not None else "never",
                              " ".join(f"{b}/{a}" for a, b in zip(sent_s, ok_s))])
    md = ("## 4. App failure\n\n4 × 50 req/s; phases run back to back: "
          + ", ".join(f"{m} {s} s" for m, s in phases)
          + ". `reached app` = the app's `received` delta minus health probes.\n\n")
    md += table(["target", "phase", "s", "sent", "ok", "refused (5xx/429)", "client errors",
                 "refusal p99 ms (worst stream)", "from send, p99 ms", "send lag p99 ms",
                 "reached app"], rows)
    md += "\nRecovery in the last phase (first second with ≥ 99 % served):\n\n"
    md += table(["target", "recovered after", "ok/sent per second"], recov)
    md += notes(ctx, ["failure"])
    return md


SLOW_SPREAD = 0.5
SLOW_MS = 58


def slower_app(ctx):
    """The app gets 16 % slower mid-run with the same workers (a throttled CPU, a slower
    database), under 2x overload, service times spread +-50 % as a real app's are. The
    concurrency the app can take does not change; an adaptive limit that reads the
    slower answers as a queue cuts it anyway."""
    dur, at, tmo = (8, 3, 3) if ctx.quick else (30, 8, 10)
    rows = []
    for t in PEERS:
        def go(port, t=t):
            path = ctx.path(f"slower-{t}.json")
            warm = 1 if ctx.quick else 3
            ctx.procs.load(port, 50, warm, ctx.path(f"warmup-slower-{t}.json"), tmo)
            cmd = ctx.procs.load_cmd(port, 200, dur, path, tmo)
            with open(ctx.path("load.log"), "ab") as log:
                gen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
                ctx.procs.live.append(gen)
                time.sleep(at)
                ctx.procs.control({"service_ms": SLOW_MS})
                if gen.wait(timeout=dur + tmo + 30) != 0:
                    raise RuntimeError(f"load generator failed against {t}")
                ctx.procs.live.remove(gen)
            with open(path) as f:
                return json.load(f)
        rep = ctx.run(t, go, "slower", spread=SLOW_SPREAD)
        crit = stream(rep, "critical")
        p99 = series_p99_ms(rep, "critical")
        after = [v for v in p99[at + 1:dur] if v is not None]
        slow_capacity = 20 / (SLOW_MS / 1000)
        gp = goodput(rep, at + 1, dur)
        rows.append([t, goodput(rep, 1, at), gp, 100.0 * gp / slow_capacity,
                     100.0 * crit["successes"] / max(crit["sent"], 1),
                     success_p(crit, "p99"), max(after) if after else None,
                     " ".join(fmt(v, 0) for v in p99[:dur])])
    md = (f"## 5. A slower app\n\nApp capacity 20, service times 50 ms ± {SLOW_SPREAD:.0%} "
          f"(uniform); 4 × 200 req/s (2×) for {dur} s; at {at} s every service time grows "
          f"to {SLOW_MS} ms ± {SLOW_SPREAD:.0%} (1.16×, the same 20 workers: capacity "
          f"{20 / (SLOW_MS / 1000):.0f} req/s). The app can take as many requests at once as "
          "before; only its answers are slower, as with a throttled CPU or a slower database.\n\n")
    md += table(["target", "goodput before", f"goodput after (from {at + 1} s)",
                 "% of capacity after", "critical served %", "critical p99 ms",
                 "worst second's critical p99 after", "critical p99 ms per second"], rows)
    md += notes(ctx, ["slower"])
    return md
