#!/usr/bin/env bash
# Where a server's CPU goes per request: req/s, user and system µs per
# request (from /proc), syscalls and context switches per request (perf
# stat), one server pinned to core 0, wrk -t1 on core 1, 2 s of warm-up
# then 6 s measured. {port} in the command is replaced.
#   bench/cpu_split.sh NAME CONNS -- command...
#   bench/cpu_split.sh oxgate 1000 -- target/release/oxgate --http-socket 127.0.0.1:{port} \
#       --wsgi-file bench/.anchors/apps/hello.py --processes 1 --disable-logging --listen 4096
#   bench/cpu_split.sh bjoern 1000 -- bench/.anchors/venv/bin/python bench/.anchors/apps/bjoern_run.py \
#       bench/.anchors/apps hello 127.0.0.1 {port}
# split.sh NAME CONNS -- cmd... : req/s, user/sys µs per request, syscalls per request
set -euo pipefail
STAT=$(mktemp)
NAME=$1 CONNS=$2; shift 3
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CMD=("${@//\{port\}/$PORT}")
taskset -c 0 "${CMD[@]}" >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait 2>/dev/null; rm -f "$STAT"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT/" >/dev/null
tree() { local k; k=$(cat /proc/$PID/task/$PID/children 2>/dev/null || true); echo $PID $k; }
PIDS=$(tree | tr ' ' ','); PIDS=${PIDS%,}
cpu() { for p in $(tree); do awk '{print $14, $15}' /proc/$p/stat; done | awk '{u+=$1; s+=$2} END {print u, s}'; }
read -r U0 S0 < <(cpu)
perf stat -e raw_syscalls:sys_enter,context-switches -p "$PIDS" -x, -o "$STAT" -- sleep 6 &
PP=$!
OUT=$(taskset -c 1 wrk -t1 -c"$CONNS" -d6s "http://127.0.0.1:$PORT/")
wait $PP || true
read -r U1 S1 < <(cpu)
N=$(awk '/requests in/{print $1}' <<<"$OUT")
SC=$(awk -F, '/raw_syscalls/{print $1}' "$STAT"); CS=$(awk -F, '/context-switches/{print $1}' "$STAT")
awk -v name="$NAME" -v c="$CONNS" -v n="$N" -v u=$((U1-U0)) -v s=$((S1-S0)) -v sc="$SC" -v cs="$CS" \
  '/Requests\/sec/{r=$2} /^ +99%/{p=$2} END {printf "%s c=%s %s req/s p99 %s user %.2f sys %.2f µs/req, %.2f syscalls/req, %.3f cs/req\n", name, c, r, p, u*1e4/n, s*1e4/n, sc/n, cs/n}' <<<"$OUT"
