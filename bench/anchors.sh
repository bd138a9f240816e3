#!/usr/bin/env bash
# anchors.sh - side-by-side HTTP load benchmark of Python WSGI application
# servers (uWSGI, gunicorn, granian, bjoern) plus an optional extra server
# given by OXGATE_CMD, all measured with the same wrk harness.
#
# Usage:  bench/anchors.sh                       # everything, 3 reps, 10 s each
#         SCENARIOS="direct nginx" bench/anchors.sh
#         OXGATE_CMD='oxgate --http {host}:{port} --wsgi-file {app}' bench/anchors.sh
#         bench/anchors.sh --help
#
# Needs: bash, nginx, wrk, curl, taskset, flock (Debian: nginx wrk curl
# util-linux), python3 with venv.  Everything else (venv, apps, configs, logs,
# results) lives in $ANCHORS_DIR, default ".anchors" beside this script (git-ignored).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat <<'EOF'
anchors.sh - benchmark Python WSGI servers (and OXGATE_CMD) with wrk on loopback.

Scenarios (SCENARIOS, space separated; default: "ceiling direct flask nginx big upload"):
  ceiling  nginx (1 worker, CPU SERVER_CPU) `return 200 "Hello, World!"`: load-generator ceiling
  direct   hello app, 1 worker process (1 thread where applicable) on SERVER_CPU,
           wrk -t1 -cCONNS on CLIENT_CPU, keep-alive HTTP/1.1, --latency;
           also RSS/PSS of master and workers, idle after start and after load
  flask    same as direct with a Flask hello app
  nginx    nginx (1 worker, on CLIENT_CPU with wrk) -> server (1 worker, SERVER_CPU):
           uwsgi_pass to uWSGI --socket, proxy_pass + upstream keepalive to the others
  big      1 MiB response, wrk -cBIG_CONNS, payload MiB/s
  upload   10 MiB POST to an echo app (wrk + lua body), wrk -cUP_CONNS, payload MiB/s

Environment (defaults in brackets):
  ANCHORS_DIR   scratch dir [<script dir>/.anchors]; ANCHORS_VENV venv [$ANCHORS_DIR/venv]
  PYTHON        interpreter used to create the venv [python3]
  RESULTS       results dir [$ANCHORS_DIR/results/<timestamp>]
  SCENARIOS     see above;  SERVERS  only these servers, space separated; "all" = default set [all]
  REPS [3]  DURATION seconds [10]  WARMUP seconds [1]  CONNS [50]  BIG_CONNS [10]  UP_CONNS [10]
  SERVER_CPU [0]  CLIENT_CPU [1]  HOST [127.0.0.1]  PORT_BASE [18100]
  UPLOAD_BYTES [10485760]   BIG_BYTES [1048576]
  PROBES [8]    fresh-connection probes (curl, ~1/s) during each timed run; 0 disables
  PROBE_TIMEOUT seconds per probe [2]; a probe that fails shows the server starving new
                connections while others are busy (wrk alone does not report that)
  BENCH_LOCK    flock file held during every timed wrk run ["${TMPDIR:-/tmp}/bench.lock"];
                set BENCH_LOCK= (empty) to disable locking
  LOCK_SCOPE    run (lock each timed wrk run) or round (lock each round: all servers of a
                scenario once, ~1-2 min) [run];  LOCK_WAIT max seconds to wait [3600]
  OXGATE_CMD    command template of an extra server, run through bash; placeholders:
                {host} {port} {app} (path of the WSGI .py file) {module} (e.g. hello:application)
                {dir} (apps dir) {name} (module name, e.g. hello) {venv} (the harness venv,
                also exported as VIRTUAL_ENV and first on PATH). It must serve HTTP/1.1 on
                {host}:{port} with exactly 1 worker process; it is pinned like the others.
  OXGATE_NAME   label for it [oxgate];  OXGATE_ONLY=1 runs only it (plus ceiling if asked)
Servers: uwsgi gunicorn-sync gunicorn-gthread granian granian-bt1 bjoern (if installed) $OXGATE_NAME
  (if OXGATE_CMD is set); opt-in only: uwsgi-http11 (e.g. SERVERS="all uwsgi-http11").
EOF
}
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { usage; exit 0; }

# ----------------------------------------------------------------- settings
WORK="${ANCHORS_DIR:-$HERE/.anchors}"
VENV="${ANCHORS_VENV:-$WORK/venv}"
PYTHON="${PYTHON:-python3}"
APPS="$WORK/apps"
SCENARIOS="${SCENARIOS:-ceiling direct flask nginx big upload}"
SERVERS="${SERVERS:-all}"
REPS="${REPS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-1}"
CONNS="${CONNS:-50}"
BIG_CONNS="${BIG_CONNS:-10}"
UP_CONNS="${UP_CONNS:-10}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
HOST="${HOST:-127.0.0.1}"
PORT_BASE="${PORT_BASE:-18100}"
UPLOAD_BYTES="${UPLOAD_BYTES:-10485760}"
BIG_BYTES="${BIG_BYTES:-1048576}"
BENCH_LOCK="${BENCH_LOCK-${TMPDIR:-/tmp}/bench.lock}"
LOCK_WAIT="${LOCK_WAIT:-3600}"
LOCK_SCOPE="${LOCK_SCOPE:-run}"
READY_TIMEOUT="${READY_TIMEOUT:-30}"
PROBES="${PROBES:-8}"
PROBE_TIMEOUT="${PROBE_TIMEOUT:-2}"
STOP_GRACE="${STOP_GRACE:-8}"
OXGATE_CMD="${OXGATE_CMD:-}"
OXGATE_NAME="${OXGATE_NAME:-oxgate}"
OXGATE_ONLY="${OXGATE_ONLY:-0}"
RESULTS="${RESULTS:-$WORK/results/$(date +%Y%m%d-%H%M%S)}"
NGINX="${NGINX:-nginx}"
if ! command -v "$NGINX" >/dev/null 2>&1; then   # root's sbin is often not on PATH
  for d in /usr/sbin /sbin; do [[ -x "$d/$NGINX" ]] && { NGINX="$d/$NGINX"; break; }; done
fi
WRK="${WRK:-wrk}"

case "$HOST" in 127.*|localhost|::1) ;; *) echo "HOST must be a loopback address" >&2; exit 2 ;; esac

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --------------------------------------------------------- process tracking
# Every background process is registered as "pid:starttime" so that cleanup
# only ever signals processes this script started (no PID-reuse accidents).
declare -a REG=()

proc_field() { # pid n -> field n (>= 3) of /proc/pid/stat, or empty
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }
  local -a f
  read -r -a f <<<"$s"
  echo "${f[$(($2 - 3))]}"
}
proc_start() { proc_field "$1" 22; }           # start time (jiffies since boot)
running() { local st; st=$(proc_field "$1" 3); [[ -n "$st" && "$st" != Z ]]; }
alive_same() { [[ -n "$1" && -n "$2" && "$(proc_start "$1")" == "$2" ]]; }
register() { REG+=("$1:$(proc_start "$1")"); }
descendants() { # pid -> all descendant pids (recursive)
  ps -e -o pid=,ppid= 2>/dev/null | awk -v root="$1" '
    { par[$1] = $2 }
    END { d[root] = 1; ch = 1
          while (ch) { ch = 0; for (k in par) if (!(k in d) && (par[k] in d)) { d[k] = 1; ch = 1 } }
          for (k in d) if (k != root) print k }'
}
# stop_tree PID: SIGTERM the process, wait STOP_GRACE s, then SIGKILL it and
# every descendant it had (each verified by start time).
stop_tree() {
  local pid=$1 st k i
  st=$(proc_start "$pid")
  [[ -z "$st" ]] && { wait "$pid" 2>/dev/null; return 0; }
  local -A kst=()
  for k in $(descendants "$pid"); do kst[$k]=$(proc_start "$k"); done
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < STOP_GRACE * 10; i++)); do
    alive_same "$pid" "$st" && running "$pid" || break
    sleep 0.1
  done
  if alive_same "$pid" "$st" && running "$pid"; then
    log "  pid $pid did not stop on SIGTERM within ${STOP_GRACE}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  for k in "${!kst[@]}"; do
    if alive_same "$k" "${kst[$k]}" && running "$k"; then
      # give orphaned workers a moment, then kill them
      sleep 0.5
      alive_same "$k" "${kst[$k]}" && running "$k" && { log "  leftover child $k: SIGKILL"; kill -KILL "$k" 2>/dev/null; }
    fi
  done
  wait "$pid" 2>/dev/null
  return 0
}
cleanup() {
  local e pid st
  trap - EXIT INT TERM
  for e in "${REG[@]}"; do
    pid=${e%%:*}; st=${e#*:}
    alive_same "$pid" "$st" && stop_tree "$pid"
  done
  [[ -n "${LOCK_FD_OPEN:-}" ]] && exec 9>&-
  return 0
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# BENCH_LOCK is held (flock on fd 9) around every timed wrk run, or, with
# LOCK_SCOPE=round, around each round of a scenario (all servers once) to cut
# the number of hand-overs when another job shares the lock.  Re-entrant.
LOCK_DEPTH=0
lock_take() {
  [[ -z "$BENCH_LOCK" ]] && return 0
  LOCK_DEPTH=$((LOCK_DEPTH + 1))
  (( LOCK_DEPTH > 1 )) && return 0
  exec 9>>"$BENCH_LOCK" && LOCK_FD_OPEN=1
  if ! flock -n 9; then
    local t0=$SECONDS
    flock -w "$LOCK_WAIT" 9 || die "could not take $BENCH_LOCK within ${LOCK_WAIT}s"
    log "  waited $((SECONDS - t0))s for $BENCH_LOCK"
  fi
}
lock_drop() {
  [[ -z "$BENCH_LOCK" || -z "${LOCK_FD_OPEN:-}" ]] && return 0
  LOCK_DEPTH=$((LOCK_DEPTH - 1))
  (( LOCK_DEPTH > 0 )) && return 0
  LOCK_DEPTH=0; flock -u 9; exec 9>&-; LOCK_FD_OPEN=
}

# ------------------------------------------------------------------ setup
need() { command -v "$1" >/dev/null 2>&1 || die "missing '$1' ($2)"; }
check_tools() {
  need curl "apt-get install curl"; need taskset "apt-get install util-linux"
  need "$WRK" "apt-get install wrk"; [[ -x "$NGINX" ]] || need "$NGINX" "apt-get install nginx"
  [[ -n "$BENCH_LOCK" ]] && need flock "apt-get install util-linux"
  need "$PYTHON" "python3 with venv"
  local n; n=$(nproc)
  (( SERVER_CPU < n && CLIENT_CPU < n )) || die "SERVER_CPU/CLIENT_CPU must be < nproc ($n)"
}

ensure_venv() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV"
    "$PYTHON" -m venv "$VENV" || die "venv creation failed"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1
  fi
  if [[ ! -x "$VENV/bin/uwsgi" || ! -x "$VENV/bin/gunicorn" || ! -x "$VENV/bin/granian" ]] \
     || ! "$VENV/bin/python" -c 'import flask' 2>/dev/null; then
    log "installing servers into venv (uWSGI compiles C, takes ~30 s)"
    lock_take
    "$VENV/bin/pip" install -q uwsgi==2.0.31 gunicorn==27.0.1 granian==2.8.7 flask \
      || { lock_drop; die "pip install failed"; }
    lock_drop
  fi
  # bjoern is optional: needs libev headers (Debian: libev-dev); meinheld does
  # not build on CPython 3.11 (its pinned greenlet<0.5 fails), so it is not tried.
  if ! "$VENV/bin/python" -c 'import bjoern' 2>/dev/null && [[ -z "${NO_BJOERN:-}" ]]; then
    if [[ -e /usr/include/ev.h ]]; then
      log "installing optional bjoern"
      lock_take; "$VENV/bin/pip" install -q bjoern >/dev/null 2>&1 || log "bjoern install failed; skipped"; lock_drop
    else
      log "bjoern skipped (no libev headers; apt-get install libev-dev to enable)"
    fi
  fi
}

write_apps() {
  mkdir -p "$APPS"
  cat >"$APPS/hello.py" <<'EOF'
BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
EOF
  cat >"$APPS/big.py" <<EOF
BODY = b"x" * $BIG_BYTES
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
EOF
  cat >"$APPS/echo.py" <<'EOF'
CHUNK = 65536


def application(environ, start_response):
    """Read the whole request body (in 64 KiB chunks) and return its length."""
    stream = environ["wsgi.input"]
    try:
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        remaining = 0
    total = 0
    while remaining > 0:
        data = stream.read(min(CHUNK, remaining))
        if not data:
            break
        total += len(data)
        remaining -= len(data)
    body = str(total).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
EOF
  cat >"$APPS/flaskhello.py" <<'EOF'
from flask import Flask, Response

app = Flask(__name__)


@app.route("/")
def hello():
    return Response(b"Hello, World!", mimetype="text/plain")


application = app
EOF
  cat >"$APPS/bjoern_run.py" <<'EOF'
import importlib
import sys

import bjoern

sys.path.insert(0, sys.argv[1])
app = importlib.import_module(sys.argv[2]).application
bjoern.run(app, sys.argv[3], int(sys.argv[4]))
EOF
  # wrk --latency prints percentiles up to p99; this adds p99.9 (no cost per request)
  cat >"$WORK/p999.lua" <<'EOF'
function done(summary, latency, requests)
  io.write(string.format("p99.9_ms %.3f\n", latency:percentile(99.9) / 1000))
end
EOF
  cat >"$WORK/upload.lua" <<EOF
-- POST a $UPLOAD_BYTES-byte body; count responses whose body is not the byte count
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("x", $UPLOAD_BYTES)
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if body ~= "$UPLOAD_BYTES" then bad = bad + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + (t:get("bad") or 0) end
  io.write(string.format("Bad bodies: %d\\n", n))
end
EOF
  [[ -s "$WORK/upload.bin" && $(stat -c %s "$WORK/upload.bin") == "$UPLOAD_BYTES" ]] \
    || head -c "$UPLOAD_BYTES" /dev/zero | tr '\0' x >"$WORK/upload.bin"
}

# ---------------------------------------------------------------- servers
NEXT_PORT=$PORT_BASE
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
alloc_port() {
  while port_busy "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
  PORT=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 1))
  (( NEXT_PORT > PORT_BASE + 2000 )) && NEXT_PORT=$PORT_BASE
}

# build_cmd SERVER APP PORT [http|uwsgi] -> CMD array
build_cmd() {
  local s=$1 app=$2 port=$3 proto=${4:-http} t
  CMD=()
  case "$s" in
    uwsgi|uwsgi-http11)
      local sock=--http-socket
      [[ $s == uwsgi-http11 ]] && sock=--http11-socket
      [[ $proto == uwsgi ]] && sock=--socket
      CMD=("$VENV/bin/uwsgi" "$sock" "$HOST:$port" --chdir "$APPS" --wsgi-file "$APPS/$app.py"
           --master --processes 1 --disable-logging --die-on-term --need-app) ;;
    gunicorn-sync)
      CMD=("$VENV/bin/gunicorn" --workers 1 --worker-class sync --bind "$HOST:$port"
           --chdir "$APPS" --graceful-timeout 5 "$app:application") ;;
    gunicorn-gthread)
      CMD=("$VENV/bin/gunicorn" --workers 1 --worker-class gthread --threads 4 --bind "$HOST:$port"
           --chdir "$APPS" --graceful-timeout 5 "$app:application") ;;
    granian|granian-bt1)
      CMD=("$VENV/bin/granian" --interface wsgi --workers 1 --host "$HOST" --port "$port"
           --working-dir "$APPS")
      [[ $s == granian-bt1 ]] && CMD+=(--blocking-threads 1)
      CMD+=("$app:application") ;;
    bjoern)
      CMD=("$VENV/bin/python" "$APPS/bjoern_run.py" "$APPS" "$app" "$HOST" "$port") ;;
    "$OXGATE_NAME")
      t=$OXGATE_CMD
      t=${t//\{host\}/$HOST}; t=${t//\{port\}/$port}; t=${t//\{app\}/$APPS/$app.py}
      t=${t//\{module\}/$app:application}; t=${t//\{dir\}/$APPS}; t=${t//\{name\}/$app}
      t=${t//\{venv\}/$VENV}
      # the same server on a gateway socket, for nginx uwsgi_pass / fastcgi_pass
      [[ $proto == uwsgi ]] && t=${t//--http-socket/--socket}
      [[ $proto == fastcgi ]] && t=${t//--http-socket/--fastcgi-socket}
      # run inside the harness venv (Flask importable), exec keeps the PID
      CMD=(env VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" bash -c "exec $t") ;;
    *) return 1 ;;
  esac
}

have_server() {
  case "$1" in
    bjoern) "$VENV/bin/python" -c 'import bjoern' 2>/dev/null ;;
    "$OXGATE_NAME") [[ -n "$OXGATE_CMD" ]] ;;
    *) return 0 ;;
  esac
}

# uwsgi-http11 (--http11-socket keep-alive) is opt-in: with 1 process and no
# threads it serves one keep-alive connection at a time and starves the rest.
OPT_IN=" uwsgi-http11 "
wanted() { # server -> is it selected
  have_server "$1" || return 1
  [[ "$OXGATE_ONLY" == 1 && "$1" != "$OXGATE_NAME" ]] && return 1
  [[ " $SERVERS " == *" $1 "* ]] && return 0
  [[ " $SERVERS " == *" all "* && "$OPT_IN" != *" $1 "* ]]
}

# start_bg CPU LOGFILE cmd... -> BG_PID (registered)
start_bg() {
  local cpu=$1 logf=$2; shift 2
  (cd "$APPS" && exec taskset -c "$cpu" "$@") >"$logf" 2>&1 </dev/null 9>&- &
  BG_PID=$!
  register "$BG_PID"
}

wait_http() { # url pid -> 0 when it answers 200
  local url=$1 pid=$2 i code
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    running "$pid" || return 1
    code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" 2>/dev/null)
    [[ "$code" == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}
wait_tcp() { # port pid
  local i
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    running "$2" || return 1
    port_busy "$1" && return 0
    sleep 0.1
  done
  return 1
}

write_nginx_conf() { # mode(static|uwsgi|proxy) listen_port upstream_port
  local mode=$1 lp=$2 up=${3:-0} dir="$WORK/nginx" loc
  mkdir -p "$dir/tmp" "$dir/logs"
  case "$mode" in
    static) loc='default_type text/plain; return 200 "Hello, World!";' ;;
    uwsgi)  loc="uwsgi_pass 127.0.0.1:$up;
            uwsgi_param QUERY_STRING \$query_string;   uwsgi_param REQUEST_METHOD \$request_method;
            uwsgi_param CONTENT_TYPE \$content_type;   uwsgi_param CONTENT_LENGTH \$content_length;
            uwsgi_param REQUEST_URI \$request_uri;     uwsgi_param PATH_INFO \$document_uri;
            uwsgi_param DOCUMENT_ROOT \$document_root; uwsgi_param SERVER_PROTOCOL \$server_protocol;
            uwsgi_param REQUEST_SCHEME \$scheme;       uwsgi_param REMOTE_ADDR \$remote_addr;
            uwsgi_param REMOTE_PORT \$remote_port;     uwsgi_param SERVER_PORT \$server_port;
            uwsgi_param SERVER_NAME \$server_name;" ;;
    fastcgi) loc='include /etc/nginx/fastcgi_params; fastcgi_keep_conn on; fastcgi_pass app;' ;;
    proxy)  loc='proxy_pass http://app; proxy_http_version 1.1;
            proxy_set_header Connection ""; proxy_set_header Host $host;' ;;
  esac
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi; uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
$( [[ $mode == proxy || $mode == fastcgi ]] && echo "    upstream app { server 127.0.0.1:$up; keepalive 64; keepalive_requests 1000000; }" )
    server {
        listen $HOST:$lp;
        location / { $loc }
    }
}
EOF
}

start_nginx() { # cpu mode upstream_port -> NGX_PID NGX_PORT
  alloc_port; NGX_PORT=$PORT
  write_nginx_conf "$2" "$NGX_PORT" "${3:-0}"
  start_bg "$1" "$RUN_LOG.nginx" "$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/logs/error.log" -c "$WORK/nginx/nginx.conf"
  NGX_PID=$BG_PID
}

# ------------------------------------------------------------------- wrk
# run_wrk OUTFILE CONNS URL [extra wrk args...]: warmup + timed run under the lock
run_wrk() {
  local out=$1 c=$2 url=$3 rc; shift 3
  lock_take
  if (( WARMUP > 0 )); then
    timeout -k 5 $((WARMUP + 30)) taskset -c "$CLIENT_CPU" "$WRK" -t1 -c"$c" -d"${WARMUP}s" "$@" "$url" >/dev/null 2>&1 9>&- &
    BG_PID=$!; register "$BG_PID"; wait "$BG_PID"
  fi
  local cpu0; cpu0=$(tree_cpu "${CPU_PID:-}")
  timeout -k 5 $((DURATION + 60)) taskset -c "$CLIENT_CPU" "$WRK" -t1 -c"$c" -d"${DURATION}s" --latency "$@" "$url" >"$out" 2>&1 9>&- &
  local wpid=$!; register "$wpid"
  local ppid=""
  if (( PROBES > 0 )); then
    probe_loop "$url" "$out.probe" 9>&- &
    ppid=$!; register "$ppid"
  fi
  wait "$wpid"; rc=$?
  # CPU of the timed run only (the probes' few requests are noise)
  echo "$cpu0 $(tree_cpu "${CPU_PID:-}")" >"$out.cpu"
  [[ -n "$ppid" ]] && wait "$ppid"
  lock_drop
  return $rc
}
# tree_cpu PID -> utime+stime (clock ticks) of PID and its descendants, all threads
tree_cpu() {
  [[ -z "$1" ]] && { echo NA; return; }
  local k t=0 u s
  for k in "$1" $(descendants "$1"); do
    u=$(proc_field "$k" 14); s=$(proc_field "$k" 15)
    [[ -n "$u" && -n "$s" ]] && t=$((t + u + s))
  done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# Fairness probe: while wrk holds its connections busy, open a *fresh*
# connection about once a second (curl, pinned to CLIENT_CPU, bounded by
# PROBE_TIMEOUT) and record status and total time.  A server that serves one
# keep-alive connection at a time (or starves new connections) fails these,
# which wrk itself does not report.
probe_loop() { # url outfile
  local i r n=$((DURATION - 2))
  (( n > PROBES )) && n=$PROBES
  (( n < 1 )) && n=1
  : >"$2"
  for ((i = 0; i < n; i++)); do
    sleep 1
    r=$(taskset -c "$CLIENT_CPU" curl -s -o /dev/null -m "$PROBE_TIMEOUT" -w '%{http_code} %{time_total}' "$1" 2>/dev/null)
    echo "${r:-000 $PROBE_TIMEOUT}" >>"$2"
  done
}
parse_wrk() { # file -> "rps p50ms p99ms requests bad(non2xx+badbody) connect read write timeout badbody"
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
                     if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    / requests in / { reqs = $1 }
    /Non-2xx or 3xx responses:/ { n2 = $NF }
    /Socket errors:/ { gsub(",", ""); ce = $4; re = $6; we = $8; te = $10 }
    /^Bad bodies:/ { bad = $3 }
    END { printf "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", rps == "" ? "NA" : rps, p50 == "" ? "NA" : p50,
          p99 == "" ? "NA" : p99, reqs == "" ? 0 : reqs, n2 + bad, ce, re, we, te, bad }' "$1"
}

# ----------------------------------------------------------------- memory
mem_one() { # pid -> "rss_kb pss_kb threads"
  local rss=NA pss=NA thr=NA
  if [[ -r "/proc/$1/smaps_rollup" ]]; then
    rss=$(awk '/^Rss:/ {print $2}' "/proc/$1/smaps_rollup"); pss=$(awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup")
  else
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null)
  fi
  thr=$(awk '/^Threads:/ {print $2}' "/proc/$1/status" 2>/dev/null)
  echo "${rss:-NA} ${pss:-NA} ${thr:-NA}"
}
record_mem() { # scen server rep phase pid
  local pid=$5 k r p t mr mp mt wr=0 wp=0 wt=0 n=0
  read -r mr mp mt < <(mem_one "$pid")
  for k in $(descendants "$pid"); do
    read -r r p t < <(mem_one "$k")
    [[ $r == NA ]] && continue
    wr=$((wr + r)); [[ $p != NA ]] && wp=$((wp + p)); wt=$((wt + ${t/NA/0})); n=$((n + 1))
  done
  if (( n == 0 )); then # single-process server: the process is the worker
    printf '%s\t%s\t%s\t%s\tNA\tNA\t%s\t%s\t1\t%s\n' "$1" "$2" "$3" "$4" "$mr" "$mp" "$mt" >>"$RESULTS/mem.tsv"
  else
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$mr" "$mp" "$wr" "$wp" "$n" \
      "$((${mt/NA/0} + wt))" >>"$RESULTS/mem.tsv"
  fi
}

# ------------------------------------------------------------------ cases
result() { # scen server rep status bytes_per_req [wrk file]
  local parsed="NA	NA	NA	0	0	0	0	0	0	0" probe="0	0	NA"
  [[ -n "${6:-}" && -s "${6:-}" ]] && parsed=$(parse_wrk "$6")
  [[ -n "${6:-}" && -s "${6:-}.probe" ]] && probe=$(awk '
      { n++; if ($1 == "200") ok++; t = $2 * 1000; if (t > mx) mx = t }
      END { printf "%d\t%d\t%.1f", ok, n, mx }' "$6.probe")
  local cpu=NA
  if [[ -n "${6:-}" && -s "${6:-}.cpu" ]]; then
    cpu=$(awk -v tck="$CLK_TCK" -v reqs="$(printf '%s' "$parsed" | cut -f4)" '
      $1 != "NA" && $2 != "NA" && reqs > 0 { printf "%.2f", ($2 - $1) * 1e6 / tck / reqs; next } { print "NA" }' "$6.cpu")
  fi
  local p999=NA
  [[ -n "${6:-}" && -s "${6:-}" ]] && p999=$(awk '/^p99.9_ms/ {v = $2} END {print (v == "" ? "NA" : v)}' "$6")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$parsed" "$probe" "$cpu" "$p999" >>"$RESULTS/results.tsv"
  if [[ "$4" == OK ]]; then
    log "  -> $(printf '%s\t%s\t%s\n' "$parsed" "$probe" "$cpu" | awk -F'\t' '{printf "%s req/s  p50 %s ms  p99 %s ms  cpu %s us/req  bad %s  errors c/r/w/t %s/%s/%s/%s  probes %s/%s max %s ms", $1, $2, $3, $14, $5, $6, $7, $8, $9, $11, $12, $13}')"
  else
    log "  -> $4"
  fi
}

check_body() { # url kind -> 0 if the response is what the app should return
  local url=$1 kind=$2 got
  case "$kind" in
    hello) got=$(curl -s -m 5 "$url"); [[ "$got" == "Hello, World!" ]] ;;
    big)   got=$(curl -s -m 10 -o /dev/null -w '%{http_code} %{size_download}' "$url"); [[ "$got" == "200 $BIG_BYTES" ]] ;;
    echo)  got=$(curl -s -m 30 -H 'Expect:' -H 'Content-Type: application/octet-stream' \
                  --data-binary @"$WORK/upload.bin" "$url"); [[ "$got" == "$UPLOAD_BYTES" ]] ;;
  esac
}

run_case() { # scen server rep
  local scen=$1 s=$2 rep=$3 app conns=$CONNS bpr=13 extra=() kind=hello id="$1.$2.$3" out url
  out="$RESULTS/wrk/$id.txt"; RUN_LOG="$RESULTS/logs/$id.log"
  log "[$scen] $s rep $rep/$REPS"
  case "$scen" in
    ceiling)
      start_nginx "$SERVER_CPU" static
      CPU_PID=$NGX_PID
      url="http://$HOST:$NGX_PORT/"
      if wait_http "$url" "$NGX_PID" && check_body "$url" hello; then
        run_wrk "$out" "$conns" "$url"; result "$scen" "$s" "$rep" OK "$bpr" "$out"
      else result "$scen" "$s" "$rep" "FAIL(start)" "$bpr"; fi
      stop_tree "$NGX_PID"; return ;;
    direct) app=hello; extra=(-s "$WORK/p999.lua") ;;
    flask)  app=flaskhello; extra=(-s "$WORK/p999.lua") ;;
    big)    app=big; kind=big; conns=$BIG_CONNS; bpr=$BIG_BYTES; extra=(--timeout 10s) ;;
    upload) app="echo"; kind="echo"; conns=$UP_CONNS; bpr=$UPLOAD_BYTES; extra=(--timeout 10s -s "$WORK/upload.lua") ;;
    nginx)  app=hello; extra=(-s "$WORK/p999.lua") ;;
  esac
  alloc_port; local sport=$PORT proto=http
  [[ $scen == nginx && $s == uwsgi ]] && proto=uwsgi
  # oxgate behind nginx over a gateway protocol: OXGATE_NGINX_PROTO=uwsgi|fastcgi
  [[ $scen == nginx && $s == "$OXGATE_NAME" && -n "${OXGATE_NGINX_PROTO:-}" ]] && proto=$OXGATE_NGINX_PROTO
  build_cmd "$s" "$app" "$sport" "$proto" || { result "$scen" "$s" "$rep" "FAIL(unknown)" "$bpr"; return; }
  printf '%q ' taskset -c "$SERVER_CPU" "${CMD[@]}" >"$RUN_LOG.cmd"; echo >>"$RUN_LOG.cmd"
  start_bg "$SERVER_CPU" "$RUN_LOG" "${CMD[@]}"
  local spid=$BG_PID
  CPU_PID=$spid
  if [[ $scen == nginx ]]; then
    if ! wait_tcp "$sport" "$spid"; then
      result "$scen" "$s" "$rep" "FAIL(start)" "$bpr"; stop_tree "$spid"; return
    fi
    case $proto in
      uwsgi|fastcgi) start_nginx "$CLIENT_CPU" "$proto" "$sport" ;;
      *) start_nginx "$CLIENT_CPU" proxy "$sport" ;;
    esac
    url="http://$HOST:$NGX_PORT/"
    if wait_http "$url" "$NGX_PID" && check_body "$url" hello; then
      run_wrk "$out" "$conns" "$url"; result "$scen" "$s" "$rep" OK "$bpr" "$out"
    else result "$scen" "$s" "$rep" "FAIL(start)" "$bpr"; fi
    stop_tree "$NGX_PID"; stop_tree "$spid"; return
  fi
  url="http://$HOST:$sport/"
  if ! wait_http "$url" "$spid"; then
    result "$scen" "$s" "$rep" "FAIL(start)" "$bpr"; log "  log tail:"; tail -5 "$RUN_LOG" >&2
    stop_tree "$spid"; return
  fi
  if ! check_body "$url" "$kind"; then
    result "$scen" "$s" "$rep" "FAIL(check)" "$bpr"; stop_tree "$spid"; return
  fi
  if [[ $scen == direct || $scen == flask ]]; then sleep 1; record_mem "$scen" "$s" "$rep" idle "$spid"; fi
  run_wrk "$out" "$conns" "$url" "${extra[@]}"
  local rc=$?
  if running "$spid"; then
    [[ $scen == direct || $scen == flask ]] && record_mem "$scen" "$s" "$rep" after "$spid"
    result "$scen" "$s" "$rep" OK "$bpr" "$out"
  else
    result "$scen" "$s" "$rep" "FAIL(died)" "$bpr" "$out"
  fi
  (( rc != 0 )) && log "  wrk exit status $rc"
  stop_tree "$spid"
}

servers_for() {
  local list
  case "$1" in
    ceiling) echo nginx-static; return ;;
    direct)  list="uwsgi uwsgi-http11 gunicorn-sync gunicorn-gthread granian granian-bt1 bjoern $OXGATE_NAME" ;;
    flask)   list="uwsgi gunicorn-sync gunicorn-gthread granian granian-bt1 bjoern $OXGATE_NAME" ;;
    nginx)   list="uwsgi gunicorn-sync gunicorn-gthread granian granian-bt1 $OXGATE_NAME" ;;
    big|upload) list="uwsgi uwsgi-http11 gunicorn-sync gunicorn-gthread granian granian-bt1 bjoern $OXGATE_NAME" ;;
    *) die "unknown scenario $1" ;;
  esac
  local s out=()
  for s in $list; do wanted "$s" && out+=("$s"); done
  echo "${out[*]}"
}

# ---------------------------------------------------------------- summary
summarize() {
  "$VENV/bin/python" - "$RESULTS" <<'PYEOF'
import csv, statistics, sys, os
res = sys.argv[1]
rows = list(csv.reader(open(os.path.join(res, "results.tsv")), delimiter="\t"))
mem = []
if os.path.exists(os.path.join(res, "mem.tsv")):
    mem = list(csv.reader(open(os.path.join(res, "mem.tsv")), delimiter="\t"))
order, groups = [], {}
for r in rows:
    key = (r[0], r[1])
    if key not in groups:
        groups[key] = []; order.append(key)
    groups[key].append(r)

def f(x):
    try: return float(x)
    except ValueError: return None

def stat(vals, fmt):
    v = [x for x in vals if x is not None]
    if not v: return "n/a"
    m = statistics.median(v)
    if len(v) == 1: return fmt.format(m)
    return (fmt + " ({}–{})").format(m, fmt.format(min(v)), fmt.format(max(v)))

titles = {
    "ceiling": "Ceiling: nginx `return 200` (1 worker, server CPU), wrk -t1 -c{c}",
    "direct": "a/e. Per-core, hello app, 1 worker on server CPU, wrk -t1 -c{c} keep-alive",
    "flask": "Per-core, Flask hello app, 1 worker, wrk -t1 -c{c}",
    "nginx": "b. Behind nginx (nginx 1 worker + wrk on client CPU, app 1 worker on server CPU), wrk -t1 -c{c}",
    "big": "c. 1 MiB response, wrk -t1 -c{bc}",
    "upload": "c. 10 MiB POST to echo app, wrk -t1 -c{uc}",
}
env = os.environ
c, bc, uc = env.get("CONNS", "50"), env.get("BIG_CONNS", "10"), env.get("UP_CONNS", "10")
out = []
for scen in ["ceiling", "direct", "flask", "nginx", "big", "upload"]:
    keys = [k for k in order if k[0] == scen]
    if not keys: continue
    out.append("### " + titles[scen].format(c=c, bc=bc, uc=uc) + "\n")
    tput = scen in ("big", "upload")
    hdr = ["server", "ok/runs", "req/s median (min–max)"]
    if tput: hdr.append("payload MiB/s median (min–max)")
    hdr += ["p50 ms", "p99 ms", "server CPU µs/req", "non-2xx or bad body", "sock err c/r/w/t", "fresh-conn probes ok/n (max ms)"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    for k in keys:
        g = groups[k]
        ok = [r for r in g if r[3] == "OK"]
        rps = [f(r[5]) for r in ok]
        line = [k[1], f"{len(ok)}/{len(g)}", stat(rps, "{:.0f}")]
        if tput:
            line.append(stat([x * float(r[4]) / 1048576 if x is not None else None for x, r in zip(rps, ok)], "{:.0f}"))
        line += [stat([f(r[6]) for r in ok], "{:.2f}"), stat([f(r[7]) for r in ok], "{:.2f}")]
        line.append(stat([f(r[18]) if len(r) > 18 else None for r in ok], "{:.2f}"))
        line.append(str(sum(int(r[9]) for r in ok)))
        line.append("/".join(str(sum(int(r[i]) for r in ok)) for i in (10, 11, 12, 13)))
        pmx = [f(r[17]) for r in ok if f(r[17]) is not None]
        line.append(f"{sum(int(r[15]) for r in ok)}/{sum(int(r[16]) for r in ok)}"
                    + (f" ({max(pmx):.0f})" if pmx else ""))
        fails = sorted({r[3] for r in g if r[3] != "OK"})
        if fails: line[1] += " " + ",".join(fails)
        out.append("| " + " | ".join(line) + " |")
    out.append("")
    mkeys = []
    for m in mem:
        if m[0] == scen and (m[1]) not in mkeys: mkeys.append(m[1])
    if mkeys:
        out.append(f"Memory ({scen}), KiB, median over runs (master = arbiter/main process; "
                   "workers = sum over all descendants; single-process servers show master n/a):\n")
        out.append("| server | phase | procs | threads | master RSS | master PSS | workers RSS | workers PSS | total PSS |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for s in mkeys:
            for ph in ("idle", "after"):
                mm = [m for m in mem if m[0] == scen and m[1] == s and m[3] == ph]
                if not mm: continue
                def med(i):
                    v = [f(m[i]) for m in mm if f(m[i]) is not None]
                    return statistics.median(v) if v else None
                vals = [med(i) for i in (4, 5, 6, 7)]
                tot = sum(v for v in (vals[1], vals[3]) if v is not None)
                cells = ["n/a" if v is None else f"{v:.0f}" for v in vals]
                procs = statistics.median([int(m[8]) + (0 if m[4] == "NA" else 1) for m in mm])
                thr = statistics.median([f(m[9]) or 0 for m in mm])
                out.append(f"| {s} | {ph} | {procs:.0f} | {thr:.0f} | " + " | ".join(cells) + f" | {tot:.0f} |")
        out.append("")
# Ratios of the extra server (OXGATE_NAME) to every peer, per scenario:
# req/s (higher is better), p99 and CPU per request (lower is better).
me = env.get("OXGATE_NAME", "oxgate")
def med(key, col):
    v = [f(r[col]) for r in groups.get(key, []) if r[3] == "OK" and len(r) > col and f(r[col]) is not None]
    return statistics.median(v) if v else None
ratio_lines = []
for scen in ["direct", "flask", "nginx", "big", "upload"]:
    if (scen, me) not in groups: continue
    for k in [k for k in order if k[0] == scen and k[1] != me]:
        cells = []
        for col, better in ((5, "up"), (7, "down"), (18, "down")):
            a, b = med((scen, me), col), med(k, col)
            cells.append("n/a" if not a or not b else f"{a / b:.2f}×")
        ratio_lines.append(f"| {scen} | {k[1]} | " + " | ".join(cells) + " |")
if ratio_lines:
    out.append(f"### Ratios: {me} ÷ peer (req/s: higher is better; p99 and CPU µs/req: lower is better)\n")
    out.append("| scenario | peer | req/s | p99 | CPU µs/req |")
    out.append("|---|---|---|---|---|")
    out.extend(ratio_lines)
    out.append("")
text = "\n".join(out)
open(os.path.join(res, "summary.md"), "w").write(text + "\n")
print(text)
PYEOF
}

write_env() {
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel: $(uname -sr)"
    echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) x $(nproc)"
    echo "python: $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0], sys.implementation.name)')"
    "$VENV/bin/python" - <<'EOF'
from importlib.metadata import version, PackageNotFoundError
for p in ("uWSGI", "gunicorn", "granian", "flask", "werkzeug", "bjoern"):
    try: print(f"{p}: {version(p)}")
    except PackageNotFoundError: print(f"{p}: not installed")
EOF
    echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    echo "wrk: $("$WRK" -v 2>&1 | head -1 | awk '{print $1, $2}')"
    echo "settings: REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS BIG_CONNS=$BIG_CONNS UP_CONNS=$UP_CONNS SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU"
    [[ -n "$OXGATE_CMD" ]] && echo "$OXGATE_NAME: $OXGATE_CMD"
  } >"$RESULTS/env.txt"
}

# ------------------------------------------------------------------- main
check_tools
mkdir -p "$WORK" "$RESULTS/wrk" "$RESULTS/logs"
ensure_venv
write_apps
: >"$RESULTS/results.tsv"
write_env
cat "$RESULTS/env.txt" >&2
export CONNS BIG_CONNS UP_CONNS
for scen in $SCENARIOS; do
  list=$(servers_for "$scen")
  [[ -z "$list" ]] && { log "[$scen] no servers selected"; continue; }
  # rounds are interleaved (rep 1 of every server, then rep 2, ...) to spread drift
  for ((rep = 1; rep <= REPS; rep++)); do
    [[ "$LOCK_SCOPE" == round ]] && lock_take
    for s in $list; do run_case "$scen" "$s" "$rep"; done
    [[ "$LOCK_SCOPE" == round ]] && lock_drop
  done
done
summarize
log "results in $RESULTS"
