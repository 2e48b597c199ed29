#!/usr/bin/env bash
# One command for every benchmark scenario: build release binaries, run direct, HAProxy,
# HAProxy with priority queuing and sluice side by side, write DIR/results.md, the raw
# JSON reports and (when matplotlib is available) the plots.
#
#   bash bench/run.sh [--quick] [--out DIR] [--only 1,2,3,4,5] [--idle poll|halt]
#                     [--gen-sched fifo|other]
#
# --quick runs every scenario for a few seconds (the CI smoke). --idle halt leaves idle
# CPUs to halt; by default the run holds /dev/cpu_dma_latency at 0 so they poll
# (bench/main.py, IdlePolling). --gen-sched other runs the load generator with normal
# scheduling; by default it runs under `chrt -f 1` (GeneratorPriority). Exit status: non-zero
# when a scenario crashes; performance numbers never fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
out="target/bench"
only=""
idle=""
gensched=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick="--quick"; shift ;;
    --out) out="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --idle) idle="$2"; shift 2 ;;
    --gen-sched) gensched="$2"; shift 2 ;;
    *) echo "usage: bench/run.sh [--quick] [--out DIR] [--only 1,2,3,4,5] [--idle poll|halt] [--gen-sched fifo|other]" >&2; exit 2 ;;
  esac
done

driver=""
cleanup() {
  if [[ -n "$driver" ]] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    wait "$driver" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

for tool in haproxy wrk python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench: installing $tool"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq haproxy wrk python3 >/dev/null
  fi
done

# 10,000 idle connections need more descriptors than the usual 1024 in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ "$(ulimit -n)" != unlimited && "$(ulimit -n)" -lt 12000 ]]; then
  echo "bench: warning: ulimit -n is $(ulimit -n); the 10k-connection test may fall short" >&2
fi

t0=$(date +%s)
cargo build --release --bins
bin="${CARGO_TARGET_DIR:-target}/release"
t1=$(date +%s)
echo "[bench] build took $((t1 - t0)) s"

mkdir -p "$out"
args=(--out "$out" --bin "$bin")
[[ -n "$quick" ]] && args+=("$quick")
[[ -n "$only" ]] && args+=(--only "$only")
[[ -n "$idle" ]] && args+=(--idle "$idle")
[[ -n "$gensched" ]] && args+=(--gen-sched "$gensched")
python3 bench/main.py "${args[@]}" &
driver=$!
wait "$driver"
driver=""

if [[ -z "$quick" ]] && ! python3 -c 'import matplotlib' 2>/dev/null; then
  pip install --quiet matplotlib >/dev/null 2>&1 || true
fi
python3 bench/plot.py "$out" || echo "[bench] plots skipped (plot.py failed)"
echo "[bench] total $(( $(date +%s) - t0 )) s; results in $out/results.md"
