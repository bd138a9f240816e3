#!/usr/bin/env bash
# Memory of one idle ASGI worker: oxgate (master + 1 worker) beside uvicorn
# (one process, uvloop + httptools), both serving the FastAPI app of the
# tests, after the same warm-up load. Uses the test venv (scripts/test.sh).
#   bench/asgi_pss.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
VENV=$ROOT/.venv-test
[[ -x $VENV/bin/uvicorn ]] || { echo "run scripts/test.sh first (it makes $VENV)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --locked -q)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
warm() {
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && break; sleep 0.1; done
  wrk -t1 -c8 -d3s "http://127.0.0.1:$1/" >/dev/null
  sleep 1
}
cd "$ROOT/tests/apps"
P=$(port)
"$ROOT/target/release/oxgate" --http-socket "127.0.0.1:$P" --processes 1 --home "$VENV" \
  --module asgi_fastapi:app --disable-logging 2>/dev/null &
OX=$!
warm "$P"
W=$(tr -d " " <"/proc/$OX/task/$OX/children")
printf 'oxgate   worker PSS %6d KiB   master PSS %6d KiB\n' "$(pss "$W")" "$(pss "$OX")"
kill $OX; wait $OX 2>/dev/null || true
P=$(port)
"$VENV/bin/uvicorn" asgi_fastapi:app --host 127.0.0.1 --port "$P" --loop uvloop --http httptools \
  --no-access-log --log-level warning &
UV=$!
warm "$P"
printf 'uvicorn  process PSS %6d KiB\n' "$(pss "$UV")"
kill $UV; wait $UV 2>/dev/null || true
