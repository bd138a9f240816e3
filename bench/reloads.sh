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
. "$HERE/under_load.sh"
start_master --wsgi-file "$(procs_app)"

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
  local failed=$(($(wrk_non2xx "$WORK/$name.wrk") + $(wrk_error_count "$WORK/$name.wrk")))
  echo "| $name | $RELOADS in ${took} s | $(wrk_requests "$WORK/$name.wrk") | $failed | $(rss) KiB, $(fds) fds |"
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
