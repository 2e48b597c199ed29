#!/usr/bin/env bash
# System calls per proxied request, sluice against HAProxy, counted by strace over a
# wrk run like scenario 1's (-t1 -c64, a fast app). strace slows both proxies many times
# over, so the rate means nothing here; the calls per request (counted / wrk's requests)
# are what the kernel is asked to do for each, and about three quarters of a request's
# CPU is the kernel's (see docs/benchmarks.md).
#
#   bash bench/syscalls.sh [BIN_DIR] [SECONDS]   (default target/release, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release}"
secs="${2:-5}"
if [[ ! -x "$bin/sluice" ]]; then
  cargo build --release --bins
fi
for tool in strace wrk haproxy; do
  command -v "$tool" >/dev/null || { echo "syscalls.sh: $tool is not installed" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "syscalls.sh: nothing listens on port $1" >&2
  exit 1
}

app_port=$(port)
"$bin/sluice-bench" app --addr "127.0.0.1:$app_port" --mode fast --threads 1 >/dev/null 2>&1 &
pids+=($!)
wait_port "$app_port"

sl_port=$(port)
cat > "$work/sluice.toml" <<EOF
[listener]
addr = "127.0.0.1:$sl_port"
workers = 1
http2 = false
[observability]
addr = ""
log_level = "warn"
[upstream]
addr = "127.0.0.1:$app_port"
[health]
path = ""
EOF
"$bin/sluice" --config "$work/sluice.toml" 2>"$work/sluice.log" &
pids+=($!)
sluice_pid=$!

hap_port=$(port)
cat > "$work/haproxy.cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend plain
    bind 127.0.0.1:$hap_port
    default_backend app
backend app
    server app 127.0.0.1:$app_port pool-max-conn 100
EOF
haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
pids+=($!)
hap_pid=$!
wait_port "$sl_port"
wait_port "$hap_port"

# Counts the system calls of process $2 (all its threads) while wrk drives port $3;
# prints "name calls_per_request" lines, then "total ...".
count() {
  local name=$1 pid=$2 p=$3
  # Warm both the client side and the proxy's upstream pool first.
  wrk -t1 -c64 -d1s "http://127.0.0.1:$p/x" >/dev/null
  strace -f -c -o "$work/$name.strace" -p "$pid" 2>/dev/null &
  local tracer=$!
  sleep 1
  wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$p/x" > "$work/$name.wrk"
  sleep 0.5
  kill -INT "$tracer"
  wait "$tracer" 2>/dev/null || true
  local requests
  requests=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
  python3 - "$work/$name.strace" "$requests" "$name" <<'PY'
import sys
path, requests, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for line in open(path):
    f = line.split()
    # "% time  seconds  usecs/call  calls  [errors]  syscall"
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls = int(f[3])
        errors = int(f[4]) if len(f) == 6 else 0
        rows.append((f[-1], calls, errors))
total = sum(c for _, c, _ in rows)
print(f"{name}: {requests} requests")
for sc, calls, errors in sorted(rows, key=lambda r: -r[1]):
    if calls / requests >= 0.01:
        err = f"  ({errors / requests:.2f} failed)" if errors else ""
        print(f"  {sc:<16} {calls / requests:6.2f}{err}")
print(f"  {'total':<16} {total / requests:6.2f}")
PY
}
count sluice "$sluice_pid" "$sl_port"
count haproxy "$hap_pid" "$hap_port"
