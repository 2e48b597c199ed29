"""Draw per-second successes and success p99 per priority per target from the JSON
reports in DIR (overload-*.json, cut-*.json, slower-*.json, failure-*-N-*.json) into DIR/*.png.

    python3 bench/plot.py DIR

Optional: without matplotlib it says so and exits 0.
"""

import glob
import json
import os
import sys

TARGETS = ["direct", "haproxy-prio", "sluice"]
PRIORITIES = ["critical", "high", "normal", "low"]


def load(path):
    with open(path) as f:
        return json.load(f)


def concat(reports):
    """Several back-to-back reports as one: series appended in order, per stream."""
    out = {p: [] for p in PRIORITIES}
    for rep in reports:
        n = int(round(rep["planned_s"]))
        for s in rep["streams"]:
            series = s["series"][:n] + [None] * max(0, n - len(s["series"]))
            out[s["name"]] += series
    return out


def draw(plt, out_dir, name, title, per_target, marks=()):
    fig, axes = plt.subplots(2, len(per_target), figsize=(5 * len(per_target), 7),
                             sharex=True, squeeze=False)
    for col, (target, streams) in enumerate(per_target.items()):
        ok_ax, p99_ax = axes[0][col], axes[1][col]
        for prio in PRIORITIES:
            series = streams.get(prio, [])
            xs = list(range(len(series)))
            ok_ax.plot(xs, [s["successes"] if s else 0 for s in series], label=prio)
            p99_ax.plot(xs, [s["success_p99_us"] / 1000 if s and s["successes"] else float("nan")
                             for s in series], label=prio)
        ok_ax.set_title(target)
        ok_ax.set_ylabel("successes / s")
        p99_ax.set_ylabel("success p99, ms (log)")
        p99_ax.set_yscale("log")
        p99_ax.set_xlabel("second (intended send time)")
        for ax in (ok_ax, p99_ax):
            ax.grid(alpha=0.3)
            for m in marks:
                ax.axvline(m, color="grey", linestyle="--", linewidth=0.8)
        ok_ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"[plot] wrote {path}")


def main():
    if len(sys.argv) != 2:
        print("usage: plot.py DIR", file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[plot] matplotlib not installed: plots skipped (pip install matplotlib)")
        return 0
    for prefix, title in (("overload", "Overload 2x: 4 x 200 req/s, capacity 400 req/s"),
                          ("cut", "Capacity cut: 4 x 100 req/s, capacity 20 -> 7"),
                          ("slower", "A slower app: 4 x 200 req/s, 50 -> 58 ms +-50 %")):
        per_target = {}
        for t in TARGETS:
            path = os.path.join(out_dir, f"{prefix}-{t}.json")
            if os.path.exists(path):
                per_target[t] = {s["name"]: s["series"] for s in load(path)["streams"]}
        if per_target:
            draw(plt, out_dir, f"{prefix}.png", title, per_target)
    per_target, marks = {}, []
    for t in TARGETS:
        files = sorted(glob.glob(os.path.join(out_dir, f"failure-{t}-*.json")))
        if files:
            reps = [load(f) for f in files]
            per_target[t] = concat(reps)
            marks, acc = [], 0
            for r in reps[:-1]:
                acc += int(round(r["planned_s"]))
                marks.append(acc)
    if per_target:
        draw(plt, out_dir, "failure.png",
             "App failure: normal | fail500 | reset | normal", per_target, marks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
