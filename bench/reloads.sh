#!/usr/bin/env bash
# 100 graceful reloads, then 100 chain reloads, in a row under load
# (issue #17): wrk -c50 on keep-alive connections to 4 workers of a hello
# app. Prints wrk's requests and failures (non-2xx, socket errors) for
# each kind, and the master's RSS and open fds before and after; writes
# bench/results/reloads.md.
#
#   bench/reloads.sh
#   RELOADS=20 bench/reloads.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
RELOADS=${RELOADS:-100}
PORT=${PORT:-18700}
OUT=$HERE/results/reloads.md
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
(cd "$ROOT" && cargo build --release --locked -q)
WORK=$(mktemp -d)
cp "$ROOT/tests/apps/procs.py" "$WORK/" && echo v1 >"$WORK/version.txt"
"$ROOT/target/release/oxgate" --http-socket 127.0.0.1:$PORT --wsgi-file "$WORK/procs.py" --processes 4 \
  --disable-logging >"$WORK/log" 2>&1 &
MASTER=$!
trap 'kill $MASTER 2>/dev/null || true; wait $MASTER 2>/dev/null || true; rm -rf "$WORK"' EXIT
sleep 2

rss() { awk '/^VmRSS/ {print $2}' /proc/$MASTER/status; }
fds() { ls /proc/$MASTER/fd | wc -l; }

run() { # name, signal
  local name=$1 sig=$2
  wrk -t1 -c50 -d600s "http://127.0.0.1:$PORT/" >"$WORK/$name.wrk" &
  local load=$!
  sleep 1
  local t0=$SECONDS
  for ((i = 0; i < RELOADS; i++)); do
    local before
    before=$(grep -c "reload done" "$WORK/log" || true)
    kill -s "$sig" $MASTER
    until (($(grep -c "reload done" "$WORK/log" || true) > before)); do
      sleep 0.02
      ((SECONDS - t0 < 600)) || { echo "reload $i did not finish" >&2; exit 1; }
    done
  done
  local took=$((SECONDS - t0))
  sleep 1
  kill -INT $load
  wait $load || true
  local done bad=0
  done=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$WORK/$name.wrk")
  bad=$(sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$WORK/$name.wrk")
  local errs
  errs=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1+\2+\3+\4/p' "$WORK/$name.wrk")
  echo "| $name | $RELOADS in ${took} s | $done | $((${bad:-0} + ${errs:-0})) | $(rss) KiB, $(fds) fds |"
}

{
  echo "# $RELOADS reloads in a row under wrk -c50, 4 workers ($(date -u +%Y-%m-%d))"
  echo
  echo "Master before: $(rss) KiB RSS, $(fds) open fds."
  echo
  echo "| reloads | done | requests | failed | master after |"
  echo "|---|---|---|---|---|"
  run graceful HUP
  run chain SIGRTMIN+1
} | tee "$OUT"
