#!/usr/bin/env bash
# Two oxgate binaries side by side over HTTP/2 (h2c), alternating: a hello
# WSGI app (h2load -c 10 -m 10) and a 1 MiB response (-c 4 -m 2), one
# worker pinned to core 0, h2load on core 1, each for SECONDS.
#   bench/h2_compare.sh OLD_BIN NEW_BIN [reps] [seconds]
set -euo pipefail
OLD=$1 NEW=$2 REPS=${3:-3} DUR=${4:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/app.py" <<'PY'
BIG = b"x" * (1 << 20)
def application(environ, start_response):
    body = BIG if environ["PATH_INFO"] == "/big" else b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
PY
rate() { grep -E "^finished" | grep -oE "[0-9.]+ req/s" | cut -d' ' -f1; }
for rep in $(seq "$REPS"); do
  for which in old new; do
    bin=$OLD; [[ $which == new ]] && bin=$NEW
    port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    taskset -c 0 "$bin" --http-socket "127.0.0.1:$port" --wsgi-file "$work/app.py" --processes 1 \
      --disable-logging >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    hello=$(taskset -c 1 timeout $((DUR + 10)) h2load -D "$DUR" -c 10 -m 10 "http://127.0.0.1:$port/" 2>&1 | rate)
    big=$(taskset -c 1 timeout $((DUR + 10)) h2load -D "$DUR" -c 4 -m 2 "http://127.0.0.1:$port/big" 2>&1 | rate)
    echo -e "$which\t$rep\thello $hello req/s\t1MiB $big req/s"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
