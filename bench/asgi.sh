#!/usr/bin/env bash
# ASGI side by side, in one run: oxgate, uvicorn (httptools + uvloop) and
# Granian (ASGI), each one worker pinned to SERVER_CPU, wrk on CLIENT_CPU,
# alternating servers within each repetition. Prints req/s, p99 and CPU
# µs per request (the server's processes, from /proc), medians, and the
# ratios of oxgate to each peer; writes the same to $DIR/summary.md.
#
#   bench/asgi.sh                                 # hello and fastapi, 3 x 8 s
#   SCENARIOS=hello REPS=5 DURATION=10 bench/asgi.sh
#
# Never run it while something else builds: the figures would be noise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DIR=${ASGI_BENCH_DIR:-$HERE/.asgi}
VENV=$DIR/venv
REPS=${REPS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SCENARIOS=${SCENARIOS:-"hello fastapi"}
SERVERS=${SERVERS:-"oxgate uvicorn granian"}
PORT=${PORT:-18300}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
mkdir -p "$DIR/apps"
REQS="uvicorn==0.54.0 uvloop==0.23.0 httptools==0.9.0 granian==2.8.7 fastapi==0.165.0"
if ! [[ -x $VENV/bin/python ]] || [[ "$(cat "$VENV/.reqs" 2>/dev/null)" != "$REQS" ]]; then
  rm -rf "$VENV"
  "${PYO3_PYTHON:-python3}" -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $REQS
  echo "$REQS" >"$VENV/.reqs"
fi
(cd "$ROOT" && cargo build --release --locked -q)

cat >"$DIR/apps/hello_asgi.py" <<'EOF'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
EOF
cat >"$DIR/apps/fastapi_hello.py" <<'EOF'
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()

@app.get("/", response_class=PlainTextResponse)
async def hello():
    return "Hello, World!"
EOF

module_of() { case $1 in hello) echo hello_asgi:app ;; fastapi) echo fastapi_hello:app ;; esac; }

start() { # server scenario -> sets PID
  local mod; mod=$(module_of "$2")
  local cmd
  case $1 in
    oxgate) cmd=("$ROOT/target/release/oxgate" --http-socket "127.0.0.1:$PORT" --module "$mod"
              --home "$VENV" --processes 1 --disable-logging --asgi) ;;
    uvicorn) cmd=("$VENV/bin/uvicorn" "$mod" --host 127.0.0.1 --port "$PORT" --workers 1
               --loop uvloop --http httptools --no-access-log --log-level warning) ;;
    granian) cmd=("$VENV/bin/granian" --interface asgi --workers 1 --host 127.0.0.1
               --port "$PORT" --no-ws --log-level warning "$mod") ;;
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

tree_cpu_ticks() { # total utime+stime of a process and its descendants
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
for scen in $SCENARIOS; do
  for rep in $(seq "$REPS"); do
    for s in $SERVERS; do
      start "$s" "$scen" || { stop; continue; }
      taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d1 "http://127.0.0.1:$PORT/" >/dev/null
      before=$(tree_cpu_ticks "$PID")
      out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/")
      after=$(tree_cpu_ticks "$PID")
      stop
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
      errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
      cpu=$(python3 -c "print(round(($after - $before) / $TICK * 1e6 / max($reqs, 1), 2))")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$s" "$rep" "$rps" "$p99" "$cpu" "$errs" | tee -a "$RESULTS"
    done
  done
done

python3 - "$RESULTS" "$DIR/summary.md" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def ms(v):
    v = v.strip()
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float("nan")
data = defaultdict(lambda: defaultdict(list))
for scen, server, _rep, rps, p99, cpu, *_ in rows:
    data[scen][server].append((float(rps), ms(p99), float(cpu)))
out = []
for scen, servers in data.items():
    out.append(f"\n### {scen} (medians)\n\n| server | req/s | p99 ms | CPU µs/req | oxgate req/s ratio |\n|---|---|---|---|---|")
    med = {s: tuple(statistics.median(x[i] for x in v) for i in range(3)) for s, v in servers.items()}
    ox = med.get("oxgate")
    for s, (rps, p99, cpu) in med.items():
        ratio = f"{ox[0] / rps:.2f}x" if ox and s != "oxgate" else ""
        out.append(f"| {s} | {rps:,.0f} | {p99:.2f} | {cpu:.1f} | {ratio} |")
text = "\n".join(out) + "\n"
print(text)
open(sys.argv[2], "w").write(text)
EOF
