"""Numbers out of sluice-bench load JSON reports, and Markdown tables."""


def ms(us):
    return None if us is None else us / 1000.0


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |")
    return "\n".join(out) + "\n"


def stream(report, name):
    for s in report["streams"]:
        if s["name"] == name:
            return s
    raise KeyError(name)


def served_pct(s):
    return 100.0 * s["successes"] / s["sent"] if s["sent"] else None


def success_p(s, q):
    lat = s["success_latency_us"]
    return ms(lat[q]) if lat["count"] else None


def refusal_p99(s, key="refusal_latency_us"):
    """p99 of a stream's refusals from the intended send time, or with
    `key="refusal_from_send_us"` from the actual send (without the generator's lag)."""
    lat = s.get(key)
    return ms(lat["p99"]) if lat and lat["count"] else None


def send_lag_p99(s):
    return ms(s["send_lag_us"]["p99"]) if s["send_lag_us"]["count"] else None


def per_second(report, field):
    """Sum of `field` over streams, per second of intended send time."""
    n = max(len(s["series"]) for s in report["streams"])
    out = [0] * n
    for s in report["streams"]:
        for sec in s["series"]:
            out[sec["second"]] += sec[field]
    return out


def series_p99_ms(report, name):
    return [ms(sec["success_p99_us"]) if sec["successes"] else None
            for sec in stream(report, name)["series"]]


def goodput(report, skip_s, end_s):
    """Successes a second over intended-send seconds [skip_s, end_s)."""
    ok = per_second(report, "successes")[skip_s:end_s]
    return sum(ok) / len(ok) if ok else 0.0


def recovery_s(p99s, from_s, bound_ms, end_s):
    """Seconds after `from_s` until a per-second p99 stays ≤ bound_ms to `end_s`
    (seconds without successes count as not recovered); None if never."""
    window = p99s[from_s:end_s]
    for i in range(len(window)):
        if all(v is not None and v <= bound_ms for v in window[i:]):
            return float(i)
    return None


def overload_rows(target, report, capacity_rps, skip_s, end_s):
    rows = []
    for s in report["streams"]:
        err = s["client_errors"]["total"]
        rows.append([target, s["name"], s["sent"], served_pct(s), success_p(s, "p50"),
                     success_p(s, "p99"), s["refusals"]["total"], refusal_p99(s),
                     refusal_p99(s, "refusal_from_send_us"), send_lag_p99(s), err])
    gp = goodput(report, skip_s, end_s)
    return rows, gp, 100.0 * gp / capacity_rps


OVERLOAD_HEADERS = ["target", "priority", "sent", "served %", "ok p50 ms", "ok p99 ms",
                    "refused", "refusal p99 ms", "from send, p99 ms", "send lag p99 ms",
                    "client errors"]
