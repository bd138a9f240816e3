#!/usr/bin/env bash
# TLS and HTTP/2 side by side, in one run (issue #16): oxgate (--https-socket),
# Granian (--ssl-certificate, one blocking thread as oxgate has one Python
# thread) and, for handshakes, nginx; all with the same ECDSA P-256
# certificate, each pinned to SERVER_CPU, the client on CLIENT_CPU, servers
# alternating within each repetition. Three scenarios:
#   h1:        hello world, TLS HTTP/1.1 keep-alive, wrk -c50: req/s, p99;
#   handshake: a new TLS connection per request (Connection: close), wrk
#              -c10: handshakes (= requests) per second; nginx answers
#              `return 200` itself, so it is the TLS ceiling;
#   h2:        hello world, HTTP/2 over TLS, h2load: 1 connection, 100
#              streams: req/s, p99 (from h2load's per-request log).
# Prints medians and oxgate's ratio to each peer; writes $DIR/summary.md.
#
#   bench/tls.sh                  # 3 x 8 s
#   REPS=5 DURATION=10 SCENARIOS="h2" bench/tls.sh
#
# Never run it while something else builds: the figures would be noise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DIR=${TLS_BENCH_DIR:-$HERE/.tls}
VENV=$DIR/venv
REPS=${REPS:-3}
DURATION=${DURATION:-8}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SCENARIOS=${SCENARIOS:-"h1 handshake h2"}
PORT=${PORT:-18500}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq "${need[@]}"; fi
REQS="granian==2.8.7"
if ! [[ -x $VENV/bin/python ]] || [[ "$(cat "$VENV/.reqs" 2>/dev/null)" != "$REQS" ]]; then
  rm -rf "$VENV"
  "${PYO3_PYTHON:-python3}" -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $REQS
  echo "$REQS" >"$VENV/.reqs"
fi
(cd "$ROOT" && cargo build --release --locked -q)

mkdir -p "$DIR/nginx/logs" "$DIR/nginx/tmp"
CRT=$DIR/site.crt KEY=$DIR/site.key
[[ -f $CRT ]] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$KEY" \
  -out "$CRT" -days 3650 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
cat >"$DIR/nginx/nginx.conf" <<EOF
worker_processes 1; user root; pid $DIR/nginx/logs/nginx.pid; error_log $DIR/nginx/logs/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $DIR/nginx/tmp;
  server { listen 127.0.0.1:$PORT ssl http2; ssl_certificate $CRT; ssl_certificate_key $KEY;
           ssl_session_cache off; ssl_session_tickets off;
           location / { return 200 "Hello, World!"; } } }
EOF

start() { # server -> sets PID
  local cmd
  case $1 in
    oxgate) cmd=("$ROOT/target/release/oxgate" --https-socket "127.0.0.1:$PORT,$CRT,$KEY"
              --wsgi-file "$ROOT/examples/hello.py" --processes 1 --disable-logging) ;;
    granian) cmd=("$VENV/bin/granian" --interface wsgi --workers 1 --blocking-threads 1
               --host 127.0.0.1 --port "$PORT" --ssl-certificate "$CRT" --ssl-keyfile "$KEY"
               --log-level warning --working-dir "$ROOT/examples" hello:application) ;;
    nginx) cmd=("$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g "daemon off;") ;;
  esac
  taskset -c "$SERVER_CPU" "${cmd[@]}" >"$DIR/$1.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -fsk -o /dev/null "https://127.0.0.1:$PORT/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start; see $DIR/$1.log" >&2
  return 1
}

stop() { kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; sleep 0.3; }

# wrk's "99%" latency in ms.
p99_ms() {
  awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub("us", "", v); v /= 1000 }
       else if (v ~ /ms$/) sub("ms", "", v); else if (v ~ /s$/) { sub("s", "", v); v *= 1000 }; print v }'
}

URL="https://127.0.0.1:$PORT/"
RESULTS=$DIR/results.tsv
: >"$RESULTS"
for rep in $(seq "$REPS"); do
  for scen in $SCENARIOS; do
    case $scen in
      handshake) servers="oxgate granian nginx" ;;
      *) servers="oxgate granian" ;;
    esac
    for s in $servers; do
      start "$s" || { stop; continue; }
      case $scen in
        h1)
          taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d1 "$URL" >/dev/null
          out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d"$DURATION" --latency "$URL")
          rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
          p99=$(p99_ms <<<"$out")
          ;;
        handshake)
          out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c10 -d"$DURATION" --latency -H "Connection: close" "$URL")
          rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
          p99=$(p99_ms <<<"$out")
          ;;
        h2)
          taskset -c "$CLIENT_CPU" h2load -c1 -m100 -D1 "$URL" >/dev/null
          out=$(taskset -c "$CLIENT_CPU" h2load -c1 -m100 -D"$DURATION" --log-file="$DIR/h2.log" "$URL")
          rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
          # The log: start (µs), status, time to the response (µs), per request.
          p99=$(awk '{print $3}' "$DIR/h2.log" | sort -n | awk '{a[NR] = $1} END {print a[int(NR * 0.99)] / 1000}')
          ;;
      esac
      errs=$(grep -E "Non-2xx|Socket errors|failed, [1-9]|errored, [1-9]" <<<"$out" | tr '\n' ' ' || true)
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$s" "$rep" "$rps" "$p99" "$errs" | tee -a "$RESULTS"
      stop
    done
  done
done

python3 - "$RESULTS" "$DIR/summary.md" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
data = defaultdict(lambda: defaultdict(list))
for scen, server, _rep, value, p99, *errs in rows:
    data[scen][server].append((float(value), float(p99), " ".join(errs).strip()))
out = []
for scen, servers in data.items():
    out.append(f"\n### {scen} (medians of {max(len(v) for v in servers.values())})\n\n"
               "| server | req/s | p99 ms | oxgate's req/s ratio | errors |\n|---|---|---|---|---|")
    med = {s: (statistics.median(v for v, _, _ in x), statistics.median(p for _, p, _ in x),
               "; ".join(e for _, _, e in x if e)) for s, x in servers.items()}
    ox = med.get("oxgate", (float("nan"),))[0]
    for s, (v, p, e) in med.items():
        ratio = "" if s == "oxgate" else f"{ox / v:.2f}×"
        out.append(f"| {s} | {v:,.0f} | {p:.2f} | {ratio} | {e} |")
text = "\n".join(out) + "\n"
print(text)
open(sys.argv[2], "w").write(text)
EOF
