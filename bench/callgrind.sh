#!/usr/bin/env bash
# User-space instructions per keep-alive hello-world request in one
# process (--no-master), counted by callgrind: two runs of a fixed number
# of requests, so start-up and app loading cancel out.
#   bench/callgrind.sh [binary]      (needs valgrind: apt-get install valgrind)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/oxgate}
count() {  # requests -> total instructions
  local port out
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  out=$(mktemp -d)
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$BIN" --no-master \
    --http-socket "127.0.0.1:$port" --wsgi-file "$ROOT/examples/hello.py" --disable-logging \
    2>"$out/log" &
  local pid=$!
  python3 - "$port" "$1" <<'PY'
import http.client, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(600):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60); c.request("GET", "/"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.1)
for _ in range(n - 1):
    c.request("GET", "/"); r = c.getresponse(); r.read()
    assert r.status == 200
c.close()
PY
  kill -TERM "$pid"; wait "$pid" || true
  grep -o 'Collected : [0-9]*' "$out/log" | grep -o '[0-9]*'
  rm -rf "$out"
}
A=$(count 2000); B=$(count 12000)
echo "$(( (B - A) / 10000 )) instructions per request ($BIN)"
