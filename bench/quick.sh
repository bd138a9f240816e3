#!/usr/bin/env bash
# One server alone, for development: pinned like anchors.sh, wrk -t1 -c50,
# prints req/s and the server's user/system CPU µs per request.
#   bench/quick.sh [seconds] -- oxgate args...   (an --http-socket is added)
# OXGATE_BIN picks another binary; CONNS another connection count.
set -euo pipefail
DUR=${1:-6}; shift; [[ "${1:-}" == -- ]] && shift
CONNS=${CONNS:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 0 "${OXGATE_BIN:-$ROOT/target/release/oxgate}" --http-socket "127.0.0.1:$PORT" "$@" 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT/" >/dev/null
# user and system ticks of the server and its workers
tree_cpu() {
  local kids; kids=$(cat "/proc/$PID/task/$PID/children" 2>/dev/null || true)
  for p in $PID $kids; do awk '{print $14, $15}' "/proc/$p/stat"; done | awk '{u += $1; s += $2} END {print u, s}'
}
read -r U0 S0 < <(tree_cpu)
OUT=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$PORT/")
read -r U1 S1 < <(tree_cpu)
N=$(awk '/requests in/{print $1}' <<<"$OUT")
TCK=$(getconf CLK_TCK)
awk -v n="$N" -v u=$((U1 - U0)) -v s=$((S1 - S0)) -v t="$TCK" \
  '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} END {printf "%s req/s  p99 %s  user %.2f µs/req  sys %.2f µs/req\n", r, p, u*1e6/t/n, s*1e6/t/n}' <<<"$OUT"
