#!/usr/bin/env bash
# Static files side by side, in one run: oxgate (--static-map), nginx (one
# worker, sendfile on, access log off) and Granian (--static-path-mount),
# each pinned to SERVER_CPU, wrk on CLIENT_CPU, servers alternating within
# each repetition. Two scenarios, as issue #15 names them:
#   small: a 4 KiB file, keep-alive, wrk -c50: req/s and CPU µs/req;
#   large: a 100 MiB file, wrk -c10: MiB/s.
# Prints medians and oxgate's ratio to each peer; writes $DIR/summary.md.
#
#   bench/static.sh                  # 3 x 8 s
#   REPS=5 DURATION=10 bench/static.sh
#
# Never run it while something else builds: the figures would be noise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DIR=${STATIC_BENCH_DIR:-$HERE/.static}
VENV=$DIR/venv
REPS=${REPS:-3}
DURATION=${DURATION:-8}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVERS=${SERVERS:-"oxgate nginx granian"}
PORT=${PORT:-18400}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
REQS="granian==2.8.7"
if ! [[ -x $VENV/bin/python ]] || [[ "$(cat "$VENV/.reqs" 2>/dev/null)" != "$REQS" ]]; then
  rm -rf "$VENV"
  "${PYO3_PYTHON:-python3}" -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $REQS
  echo "$REQS" >"$VENV/.reqs"
fi
(cd "$ROOT" && cargo build --release --locked -q)

FILES=$DIR/files
mkdir -p "$FILES" "$DIR/nginx/logs" "$DIR/nginx/tmp"
[[ -f $FILES/small.bin ]] || head -c 4096 /dev/urandom >"$FILES/small.bin"
[[ -f $FILES/large.bin ]] || head -c $((100 << 20)) /dev/urandom >"$FILES/large.bin"
cat >"$DIR/nginx/nginx.conf" <<EOF
worker_processes 1; user root; pid $DIR/nginx/logs/nginx.pid; error_log $DIR/nginx/logs/error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path $DIR/nginx/tmp;
  server { listen 127.0.0.1:$PORT; location /static/ { alias $FILES/; } } }
EOF

start() { # server -> sets PID
  local cmd
  case $1 in
    oxgate) cmd=("$ROOT/target/release/oxgate" --http-socket "127.0.0.1:$PORT" --static-map "/static=$FILES"
              --wsgi-file "$ROOT/examples/hello.py" --processes 1 --disable-logging) ;;
    nginx) cmd=("$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g "daemon off;") ;;
    granian) cmd=("$VENV/bin/granian" --interface wsgi --workers 1 --host 127.0.0.1 --port "$PORT"
               --static-path-route /static --static-path-mount "$FILES" --log-level warning
               --working-dir "$ROOT/examples" hello:application) ;;
  esac
  taskset -c "$SERVER_CPU" "${cmd[@]}" >"$DIR/$1.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/static/small.bin" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start; see $DIR/$1.log" >&2
  return 1
}

tree_cpu_ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" 2>/dev/null); do
    [[ -r /proc/$p/stat ]] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

stop() { kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; sleep 0.3; }

TICK=$(getconf CLK_TCK)
RESULTS=$DIR/results.tsv
: >"$RESULTS"
for rep in $(seq "$REPS"); do
  for s in $SERVERS; do
    start "$s" || { stop; continue; }
    # small: 4 KiB, keep-alive, 50 connections
    url="http://127.0.0.1:$PORT/static/small.bin"
    taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d1 "$url" >/dev/null
    before=$(tree_cpu_ticks "$PID")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d"$DURATION" "$url")
    after=$(tree_cpu_ticks "$PID")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    cpu=$(python3 -c "print(round(($after - $before) / $TICK * 1e6 / max($reqs, 1), 2))")
    printf 'small\t%s\t%s\t%s\t%s\t%s\n' "$s" "$rep" "$rps" "$cpu" "$errs" | tee -a "$RESULTS"
    # large: 100 MiB, 10 connections
    before=$(tree_cpu_ticks "$PID")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c10 -d"$DURATION" "http://127.0.0.1:$PORT/static/large.bin")
    after=$(tree_cpu_ticks "$PID")
    # The server's share of its core: where it is far from 100%, the client
    # (which copies every byte out of its socket) sets the pace.
    busy=$(python3 -c "print(round(($after - $before) / $TICK / $DURATION * 100))")
    mibs=$(awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else {sub("MB","",v)}; print v}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    printf 'large\t%s\t%s\t%s\t%s\t%s\n' "$s" "$rep" "$mibs" "$busy" "$errs" | tee -a "$RESULTS"
    stop
  done
done

# A static request costs no Python: perf samples oxgate's worker under the
# small scenario's load; the share of samples in libpython goes in the
# summary (0% when the app and its interpreter never run).
PROFILE=$DIR/profile.txt
: >"$PROFILE"
if [[ " $SERVERS " == *" oxgate "* ]] && command -v perf >/dev/null && start oxgate; then
  worker=$(pgrep -P "$PID" | head -1)
  url="http://127.0.0.1:$PORT/static/small.bin"
  taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d"$((DURATION + 2))" "$url" >/dev/null &
  wrk_pid=$!
  sleep 1
  if perf record -q -F 999 -e cpu-clock -p "$worker" -o "$DIR/perf.data" -- sleep "$DURATION" 2>/dev/null; then
    perf report -i "$DIR/perf.data" --sort dso --stdio 2>/dev/null | awk '
      /^#/ || NF < 2 {next}
      {share=$1; sub("%", "", share); total+=share; if ($2 ~ /libpython/) py+=share}
      END {printf "perf, oxgate worker under the small scenario: %.2f%% of samples in libpython (all shared objects: %.0f%%)\n", py, total}' >"$PROFILE"
    perf report -i "$DIR/perf.data" --sort dso --stdio 2>/dev/null | grep -v '^#' | grep . | head -8 >>"$PROFILE"
  fi
  wait "$wrk_pid" || true
  stop
fi

python3 - "$RESULTS" "$DIR/summary.md" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
data = defaultdict(lambda: defaultdict(list))
for scen, server, _rep, value, cpu, *_ in rows:
    data[scen][server].append((float(value), float(cpu) if cpu else float("nan")))
out = []
for scen, servers in data.items():
    unit = "req/s" if scen == "small" else "MiB/s"
    cpu = "CPU µs/req" if scen == "small" else "server CPU, % of its core"
    out.append(f"\n### {scen} (medians)\n\n| server | {unit} | {cpu} | oxgate ratio |\n|---|---|---|---|")
    med = {s: (statistics.median(v for v, _ in x), statistics.median(c for _, c in x)) for s, x in servers.items()}
    ox = med.get("oxgate")
    for s, (v, c) in med.items():
        ratio = f"{ox[0] / v:.2f}x" if ox and s != "oxgate" else ""
        out.append(f"| {s} | {v:,.0f} | {c:.1f} | {ratio} |")
text = "\n".join(out) + "\n"
profile = open(sys.argv[1].rsplit("/", 1)[0] + "/profile.txt").read().strip()
if profile:
    text += "\n### Python's share\n\n```\n" + profile + "\n```\n"
print(text)
open(sys.argv[2], "w").write(text)
EOF
