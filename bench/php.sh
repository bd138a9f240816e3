#!/usr/bin/env bash
# PHP side by side, in one run (issue #14): hello.php on 4 PHP processes in
# every setup, each replaced after 500 requests (php-cgi's default, set for
# php-fpm too)
#   nginx-fpm:     nginx -> fastcgi_pass -> php-fpm (pm static, 4 children)
#   nginx-oxgate:  nginx -> fastcgi_pass -> oxgate, its php-cgi pool (4)
#   nginx-oxgate-keep: the same with nginx keeping its connections to
#                  oxgate (fastcgi_keep_conn, upstream keepalive), which
#                  oxgate serves at once however many (php-fpm's children
#                  would each sit on an idle one: no such setup for it)
#   oxgate-http:   oxgate over HTTP, its php-cgi pool (4), no nginx
#   ...-exec:      (SETUPS=oxgate-http-exec) the same with
#                  PHP_FCGI_CHILDREN=0: each php-cgi serves, and is exec'd
#                  anew at its cap, instead of forking its serving child
# The servers and PHP on SERVER_CPU, wrk -c10 on CLIENT_CPU, setups
# alternating within each repetition. Prints medians of req/s and the
# ratios to nginx-fpm; writes $DIR/summary.md.
#
#   bench/php.sh                  # 3 x 8 s
#   REPS=5 DURATION=10 bench/php.sh
#
# Never run it while something else builds: the figures would be noise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DIR=${PHP_BENCH_DIR:-$HERE/.php}
REPS=${REPS:-3}
DURATION=${DURATION:-8}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SETUPS=${SETUPS:-"nginx-fpm nginx-oxgate oxgate-http"}
# MAX_REQUESTS=0: no process is ever replaced, in any setup.
# OXGATE_ARGS: more options for oxgate (OXGATE_ARGS=--sched-batch=false).
MAX_REQUESTS=${MAX_REQUESTS:-500}
PORT=${PORT:-18600}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
FPM=$(compgen -G "/usr/sbin/php-fpm*" | head -1 || true)

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
[[ -n $FPM ]] || { apt-get update -qq && apt-get install -y -qq php-fpm php-cgi; FPM=$(compgen -G "/usr/sbin/php-fpm*" | head -1); }
(cd "$ROOT" && cargo build --release --locked -q)

SITE=$DIR/site
mkdir -p "$SITE" "$DIR/nginx/logs" "$DIR/nginx/tmp"
printf '<?php echo "hello from ", $_SERVER["SCRIPT_NAME"], "\\n";\n' >"$SITE/hello.php"
SOCK=$DIR/fcgi.sock
cat >"$DIR/fpm.conf" <<CONF
[global]
pid = $DIR/fpm.pid
error_log = $DIR/fpm.log
daemonize = no
[www]
user = root
listen = $SOCK
pm = static
pm.max_children = 4
; as php-cgi's own PHP_FCGI_MAX_REQUESTS default: both recycle alike
pm.max_requests = $MAX_REQUESTS
CONF
# shellcheck source=bench/nginx_fastcgi.sh
. "$HERE/nginx_fastcgi.sh"
nginx_conf() { nginx_fastcgi_conf "$1" "$SITE" '~ \.php$'; } # keep: 0|1

PIDS=()
launch() { taskset -c "$SERVER_CPU" "$@" >>"$DIR/servers.log" 2>&1 & PIDS+=($!); }

start() { # setup -> PIDS
  rm -f "$SOCK"
  PIDS=()
  local extra=() setup=${1%-exec}
  [[ $1 == *-exec ]] && extra=(--fastcgi-app-env PHP_FCGI_CHILDREN=0)
  nginx_conf "$([[ $setup == *-keep ]] && echo 1 || echo 0)"
  case ${setup%-keep} in
    nginx-fpm) launch "$FPM" -R -F -y "$DIR/fpm.conf" ;;
    nginx-oxgate) launch "$ROOT/target/release/oxgate" --fastcgi-socket "$SOCK" --fastcgi-app php-cgi \
                    --fastcgi-app-env "PHP_FCGI_MAX_REQUESTS=$MAX_REQUESTS" --fastcgi-app-pm static --fastcgi-app-processes 4 --fastcgi-app-docroot "$SITE" \
                    --processes 1 --disable-logging "${extra[@]}" ${OXGATE_ARGS:-} ;;
    oxgate-http) launch "$ROOT/target/release/oxgate" --http-socket "127.0.0.1:$PORT" --fastcgi-app php-cgi \
                   --fastcgi-app-env "PHP_FCGI_MAX_REQUESTS=$MAX_REQUESTS" --fastcgi-app-pm static --fastcgi-app-processes 4 --fastcgi-app-docroot "$SITE" \
                   --processes 1 --disable-logging "${extra[@]}" ${OXGATE_ARGS:-} ;;
  esac
  [[ $1 == nginx-* ]] && launch "$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g "daemon off;"
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/hello.php" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start; see $DIR/servers.log" >&2
  return 1
}

stop() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  sleep 0.3
}

RESULTS=$DIR/results.tsv
: >"$RESULTS"
url="http://127.0.0.1:$PORT/hello.php"
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
base = med.get("nginx-fpm")
out = ["| setup | req/s (median) | ratio to nginx-fpm |", "|---|---|---|"]
for s, v in med.items():
    out.append(f"| {s} | {v:,.0f} | {v / base:.2f}x |" if base else f"| {s} | {v:,.0f} | |")
text = "\n".join(out) + "\n"
print(text)
open(sys.argv[2], "w").write(text)
PY
