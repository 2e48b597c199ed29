#!/usr/bin/env bash
# Where sluice spends its CPU under pass-through load: sluice (bench/sluice-bench.toml, one
# worker) in front of the simulated app in fast mode, driven by `wrk -t1 -c64`, sampled by
# `perf record -g` (the cpu-clock event, so it works without hardware counters). Writes
#   DIR/report.txt      shares by binary (kernel, sluice, libc) and the top functions;
#   DIR/perf.data       the samples, for `perf report -i DIR/perf.data`;
#   DIR/flamegraph.svg  when inferno is installed (`cargo install inferno`).
#
#   bash bench/profile.sh [DIR] [SECONDS]        (default target/profile, 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/profile}"
secs="${2:-5}"
mkdir -p "$out"
for tool in perf wrk python3; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool is not installed" >&2; exit 1; }
done
cargo build --release --bins
bin="${CARGO_TARGET_DIR:-target}/release"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
app_port=$(port); sl_port=$(port); obs_port=$(port)
"$bin/sluice-bench" --threads 1 app --addr "127.0.0.1:$app_port" --mode fast >/dev/null 2>&1 &
pids+=($!)
sed -e "s/127.0.0.1:18080/127.0.0.1:$sl_port/" -e "s/127.0.0.1:19090/127.0.0.1:$obs_port/" \
    -e "s/127.0.0.1:18000/127.0.0.1:$app_port/" bench/sluice-bench.toml > "$out/sluice.toml"
"$bin/sluice" --config "$out/sluice.toml" >/dev/null 2>&1 &
sluice=$!
pids+=($sluice)
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$sl_port/" && break
  sleep 0.1
done

# Load starts first and outlasts the recording by a second either side.
wrk -t1 -c64 -d"$((secs + 2))s" "http://127.0.0.1:$sl_port/" > "$out/wrk.txt" &
pids+=($!)
sleep 1
perf record -e cpu-clock -F 999 -g -p "$sluice" -o "$out/perf.data" -- sleep "$secs" 2>/dev/null
wait "${pids[-1]}" || true

# `head` closes the pipe before perf has written everything: no pipefail here.
set +o pipefail
{
  grep -E "Requests/sec|Latency" "$out/wrk.txt" || true
  echo
  echo "== CPU by binary"
  perf report -i "$out/perf.data" --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
  echo
  echo "== top functions (self)"
  perf report -i "$out/perf.data" --no-children --sort dso,sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
} > "$out/report.txt"
set -o pipefail
cat "$out/report.txt"

if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
  perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$out/flamegraph.svg"
  echo "flamegraph: $out/flamegraph.svg"
else
  echo "(no flamegraph: cargo install inferno)"
fi
