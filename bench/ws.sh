#!/usr/bin/env bash
# WebSocket echo side by side, in one run: oxgate, Granian (ASGI) and
# uvicorn (websockets, uvloop), each one worker pinned to SERVER_CPU, the
# load client (bench/wsload, Rust, one thread) on CLIENT_CPU, alternating
# servers within each repetition. CONNS clients each send a SIZE-byte
# message and wait for its echo. Prints messages/s, p99 and the server's
# CPU µs per message, medians, and oxgate's ratios; writes $DIR/summary.md.
#
#   bench/ws.sh                       # 64 clients, 1 KiB, 3 x 8 s
#   CONNS=1000 SIZE=64 bench/ws.sh
#
# Never run it while something else builds: the figures would be noise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DIR=${WS_BENCH_DIR:-$HERE/.asgi-ws}
VENV=$DIR/venv
REPS=${REPS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
SIZE=${SIZE:-1024}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVERS=${SERVERS:-"oxgate granian uvicorn"}
PORT=${PORT:-18400}

mkdir -p "$DIR/apps"
REQS="uvicorn==0.54.0 uvloop==0.23.0 httptools==0.9.0 websockets==17.4 granian==2.8.7"
if ! [[ -x $VENV/bin/python ]] || [[ "$(cat "$VENV/.reqs" 2>/dev/null)" != "$REQS" ]]; then
  rm -rf "$VENV"
  "${PYO3_PYTHON:-python3}" -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $REQS
  echo "$REQS" >"$VENV/.reqs"
fi
(cd "$ROOT" && cargo build --release --locked -q)
(cd "$HERE/wsload" && cargo build --release --locked -q)
LOAD=$HERE/wsload/target/release/wsload

cat >"$DIR/apps/ws_echo.py" <<'PY'
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"up"})
        return
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "bytes": m.get("bytes"), "text": m.get("text")})
PY

start() { # server -> sets PID
  local cmd
  case $1 in
    oxgate) cmd=("$ROOT/target/release/oxgate" --http-socket "127.0.0.1:$PORT" --module ws_echo:app
              --home "$VENV" --processes 1 --disable-logging --asgi --listen 1024) ;;
    granian) cmd=("$VENV/bin/granian" --interface asgi --workers 1 --host 127.0.0.1
               --port "$PORT" --log-level warning ws_echo:app) ;;
    uvicorn) cmd=("$VENV/bin/uvicorn" ws_echo:app --host 127.0.0.1 --port "$PORT" --workers 1
               --loop uvloop --http httptools --ws websockets --no-access-log --log-level warning) ;;
  esac
  taskset -c "$SERVER_CPU" "${cmd[@]}" >"$DIR/$1.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not start; see $DIR/$1.log" >&2
  return 1
}

tree_cpu_ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" 2>/dev/null) $(for c in $(pgrep -P "$1"); do pgrep -P "$c"; done 2>/dev/null); do
    [[ -r /proc/$p/stat ]] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

stop() { kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; sleep 0.3; }

TICK=$(getconf CLK_TCK)
RESULTS=$DIR/results.tsv
: >"$RESULTS"
cd "$DIR/apps"
export PYTHONPATH=$DIR/apps
for rep in $(seq "$REPS"); do
  for s in $SERVERS; do
    start "$s" || { stop; continue; }
    taskset -c "$CLIENT_CPU" "$LOAD" "ws://127.0.0.1:$PORT/" "$CONNS" "$SIZE" 1 >/dev/null
    before=$(tree_cpu_ticks "$PID")
    out=$(taskset -c "$CLIENT_CPU" "$LOAD" "ws://127.0.0.1:$PORT/" "$CONNS" "$SIZE" "$DURATION")
    after=$(tree_cpu_ticks "$PID")
    stop
    read -r _ msgs _ rate _ _ _ p99 _ errs <<<"$out"
    cpu=$(python3 -c "print(round(($after - $before) / $TICK * 1e6 / max($msgs, 1), 2))")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$rep" "$rate" "$p99" "$cpu" "$errs" | tee -a "$RESULTS"
  done
done

python3 - "$RESULTS" "$DIR/summary.md" "$CONNS" "$SIZE" <<'PY'
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(list)
for s, _, rate, p99, cpu, errs in rows:
    by[s].append((float(rate), float(p99), float(cpu), int(errs)))
med = {s: [statistics.median(x[i] for x in v) for i in range(3)] + [sum(x[3] for x in v)]
       for s, v in by.items()}
out = [f"WebSocket echo, {sys.argv[3]} clients, {sys.argv[4]}-byte messages "
       f"(medians of {max(len(v) for v in by.values())} runs)", "",
       "| server | messages/s | p99 ms | CPU µs/message | errors |", "|---|---|---|---|---|"]
for s, (rate, p99, cpu, errs) in med.items():
    out.append(f"| {s} | {rate:,.0f} | {p99:.2f} | {cpu:.1f} | {errs} |")
if "oxgate" in med:
    out.append("")
    for s in med:
        if s != "oxgate":
            out.append(f"oxgate / {s}: {med['oxgate'][0] / med[s][0]:.2f}x messages/s")
text = "\n".join(out)
print(text)
open(sys.argv[2], "w").write(text + "\n")
PY
