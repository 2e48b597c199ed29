#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind (exact and repeatable, unlike
# req/s on a shared machine). sluice runs under valgrind in front of the simulated app in
# fast mode; 4 keep-alive connections send N1, then, in a second run, N2 requests; the
# difference divided by N2 - N1 is the cost of one request with start-up and shutdown
# cancelled out. Then the heap allocations per request and who makes them
# (bench/callgrind_allocs.py), and, when haproxy is installed, HAProxy's instructions per
# request in the same setup (one thread, plain forwarding), for comparison.
#
#   bash bench/callgrind.sh [BIN_DIR]      (default target/release; builds it if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release}"
if [[ ! -x "$bin/sluice" ]]; then
  cargo build --release --bins
fi
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }

work=$(mktemp -d)
app=""
trap '[[ -n "$app" ]] && kill "$app" 2>/dev/null; [[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
app_port=$(port)
"$bin/sluice-bench" app --addr "127.0.0.1:$app_port" --mode fast --threads 1 >/dev/null 2>&1 &
app=$!

# Instructions of one run of $2 (sluice, the default, or haproxy) serving $1 requests.
run() {
  local n=$1 target=${2:-sluice} sl_port out
  sl_port=$(port)
  out="$work/callgrind.$n"
  [[ "$target" == sluice ]] || out="$work/callgrind.$target.$n"
  if [[ "$target" == sluice ]]; then
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
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$bin/sluice" --config "$work/sluice.toml" 2>"$work/valgrind.$n.log" &
  else
    cat > "$work/haproxy.cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend plain
    bind 127.0.0.1:$sl_port
    default_backend app
backend app
    server app 127.0.0.1:$app_port pool-max-conn 100
EOF
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      haproxy -db -f "$work/haproxy.cfg" 2>"$work/valgrind.$target.$n.log" &
  fi
  local sl=$!
  python3 - "$sl_port" "$n" <<'PY'
import http.client, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
deadline = time.time() + 60
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the proxy did not start")
        time.sleep(0.2)
conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(4)]
for i in range(n):
    c = conns[i % 4]
    c.request("GET", "/x")
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"request {i}: status {r.status}")
for c in conns:
    c.close()
PY
  # SIGINT stops sluice; SIGUSR1 is HAProxy's soft stop (its exit writes the profile).
  if [[ "$target" == sluice ]]; then kill -INT "$sl"; else kill -USR1 "$sl"; fi
  wait "$sl" || true
  # "summary: <Ir>" (or "totals:") in the callgrind output file.
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

n1=1000
n2=5000
i1=$(run $n1)
i2=$(run $n2)
echo "instructions: $i1 for $n1 requests, $i2 for $n2"
echo "per request: $(( (i2 - i1) / (n2 - n1) ))"
python3 bench/callgrind_allocs.py "$work/callgrind.$n1" "$work/callgrind.$n2" $((n2 - n1))
if command -v haproxy >/dev/null; then
  h1=$(run $n1 haproxy)
  h2=$(run $n2 haproxy)
  echo "haproxy: $h1 for $n1 requests, $h2 for $n2; per request: $(( (h2 - h1) / (n2 - n1) ))"
fi
