#!/usr/bin/env bash
# kill -9 of a random worker every 200 ms for 60 s under load (issue #17):
# wrk -c50 on keep-alive connections to 4 workers of a hello app. Prints the
# kills, wrk's requests and failures (each killed worker takes the requests
# and connections it had), whether the master is still up with 4 workers,
# and the back-off it logged; writes bench/results/chaos.md.
#
#   bench/chaos.sh
#   SECONDS_OF_CHAOS=20 bench/chaos.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
CHAOS=${SECONDS_OF_CHAOS:-60}
PORT=${PORT:-18800}
OUT=$HERE/results/chaos.md
. "$HERE/under_load.sh"
start_master --wsgi-file "$(procs_app)"

wrk -t1 -c50 -d$((CHAOS + 2))s "http://127.0.0.1:$PORT/" >"$WORK/wrk" &
LOAD=$!
sleep 1
kills=0
end=$((SECONDS + CHAOS))
while ((SECONDS < end)); do
  mapfile -t workers < <(pgrep -P $MASTER || true)
  if ((${#workers[@]})); then
    kill -9 "${workers[RANDOM % ${#workers[@]}]}" 2>/dev/null && kills=$((kills + 1))
  fi
  sleep 0.2
done
wait $LOAD || true
sleep 3
up=$(kill -0 $MASTER 2>/dev/null && echo yes || echo no)
serving=$(pgrep -P $MASTER | wc -l)
done_=$(wrk_requests "$WORK/wrk")
bad=$(wrk_non2xx "$WORK/wrk")
errs=$(wrk_errors "$WORK/wrk")
ok=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/")
{
  echo "# kill -9 of a random worker every 200 ms for $CHAOS s, wrk -c50, 4 workers ($(date -u +%Y-%m-%d))"
  echo
  echo "- kills: $kills"
  echo "- requests: $done_; non-2xx: $bad; socket errors: $errs"
  echo "- master up afterwards: $up, with $serving workers; a fresh request: $ok"
  echo "- the master logged $(grep -c 'killed by signal 9' "$WORK/log" || true) workers killed by signal 9, and $(grep -ci 'back-off\|backing off\|waiting' "$WORK/log" || true) back-off lines"
  echo "- wrk's failures per kill: $(awk -v e="$(wrk_error_count "$WORK/wrk")" -v k="$kills" 'BEGIN { printf "%.1f", (e + 0) / (k ? k : 1) }') (50 connections over 4 workers: about 12 on each)"
} | tee "$OUT"
