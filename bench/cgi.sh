#!/usr/bin/env bash
# CGI side by side, in one run (issue #14): a hello-world shell script run
#   nginx-fcgiwrap:  nginx -> fastcgi_pass -> fcgiwrap -c 4 (the usual set-up)
#   nginx-oxgate:    nginx -> fastcgi_pass -> oxgate --cgi, 1 worker
#   nginx-oxgate-keep: the same with nginx keeping its connections to oxgate
#                    (fastcgi_keep_conn, upstream keepalive), which oxgate
#                    serves at once however many (fcgiwrap's children each
#                    serve one connection until it closes, as php-fpm's do)
#   oxgate-http:     oxgate --cgi over HTTP, no nginx, 1 worker
# The servers (and the scripts they start) on SERVER_CPU, wrk -c10 on
# CLIENT_CPU, setups alternating within each repetition. Prints medians of
# req/s and oxgate's ratio to fcgiwrap; writes $DIR/summary.md.
#
#   bench/cgi.sh                  # 3 x 8 s
#   REPS=5 DURATION=10 bench/cgi.sh
#
# Never run it while something else builds: the figures would be noise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DIR=${CGI_BENCH_DIR:-$HERE/.cgi}
REPS=${REPS:-3}
DURATION=${DURATION:-8}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SETUPS=${SETUPS:-"nginx-fcgiwrap nginx-oxgate oxgate-http"}
PORT=${PORT:-18500}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
FCGIWRAP=$(command -v fcgiwrap || echo /usr/sbin/fcgiwrap)

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
[[ -x $FCGIWRAP ]] || { apt-get update -qq && apt-get install -y -qq fcgiwrap; }
(cd "$ROOT" && cargo build --release --locked -q)

SCRIPTS=$DIR/cgi-bin
mkdir -p "$SCRIPTS" "$DIR/nginx/logs" "$DIR/nginx/tmp"
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nhello from %%s\\n" "$SCRIPT_NAME"\n' >"$SCRIPTS/hello.sh"
chmod +x "$SCRIPTS/hello.sh"
SOCK=$DIR/fcgi.sock
# shellcheck source=bench/nginx_fastcgi.sh
. "$HERE/nginx_fastcgi.sh"
nginx_conf() { nginx_fastcgi_conf "$1" "$DIR" /cgi-bin/; } # keep: 0|1

PIDS=()
launch() { taskset -c "$SERVER_CPU" "$@" >>"$DIR/servers.log" 2>&1 & PIDS+=($!); }

start() { # setup -> PIDS
  rm -f "$SOCK"
  PIDS=()
  nginx_conf "$([[ $1 == *-keep ]] && echo 1 || echo 0)"
  case ${1%-keep} in
    nginx-fcgiwrap) launch "$FCGIWRAP" -c 4 -s "unix:$SOCK" ;;
    nginx-oxgate) launch "$ROOT/target/release/oxgate" --fastcgi-socket "$SOCK" --cgi "$SCRIPTS" \
                    --processes 1 --disable-logging ;;
    oxgate-http) launch "$ROOT/target/release/oxgate" --http-socket "127.0.0.1:$PORT" \
                   --cgi "/cgi-bin=$SCRIPTS" --processes 1 --disable-logging ;;
  esac
  [[ $1 == nginx-* ]] && launch "$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g "daemon off;"
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/cgi-bin/hello.sh" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start; see $DIR/servers.log" >&2
  return 1
}

stop() {
  local p
  # fcgiwrap -c 4's children outlive their parent's SIGTERM.
  for p in "${PIDS[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  sleep 0.3
}

RESULTS=$DIR/results.tsv
: >"$RESULTS"
url="http://127.0.0.1:$PORT/cgi-bin/hello.sh"
for rep in $(seq "$REPS"); do
  for s in $SETUPS; do
    start "$s" || { stop; continue; }
    taskset -c "$CLIENT_CPU" wrk -t1 -c10 -d1 "$url" >/dev/null
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c10 -d"$DURATION" "$url")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    printf '%s\t%s\t%s\t%s\n' "$s" "$rep" "$rps" "$errs" | tee -a "$RESULTS"
    stop
  done
done

python3 - "$RESULTS" "$DIR/summary.md" <<'PY'
import statistics, sys
from collections import defaultdict
data = defaultdict(list)
for line in open(sys.argv[1]):
    if line.strip():
        setup, _rep, rps, *_ = line.rstrip("\n").split("\t")
        data[setup].append(float(rps))
med = {s: statistics.median(v) for s, v in data.items()}
base = med.get("nginx-fcgiwrap")
out = ["| setup | req/s (median) | ratio to nginx-fcgiwrap |", "|---|---|---|"]
for s, v in med.items():
    out.append(f"| {s} | {v:,.0f} | {v / base:.2f}x |" if base else f"| {s} | {v:,.0f} | |")
text = "\n".join(out) + "\n"
print(text)
open(sys.argv[2], "w").write(text)
PY
