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
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
(cd "$ROOT" && cargo build --release --locked -q)
WORK=$(mktemp -d)
cp "$ROOT/tests/apps/procs.py" "$WORK/" && echo v1 >"$WORK/version.txt"
"$ROOT/target/release/oxgate" --http-socket 127.0.0.1:$PORT --wsgi-file "$WORK/procs.py" --processes 4 \
  --disable-logging >"$WORK/log" 2>&1 &
MASTER=$!
trap 'kill $MASTER 2>/dev/null || true; wait $MASTER 2>/dev/null || true; rm -rf "$WORK"' EXIT
sleep 2

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
done_=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$WORK/wrk")
bad=$(sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$WORK/wrk")
errs=$(sed -n 's/.*Socket errors: \(.*\)/\1/p' "$WORK/wrk")
ok=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/")
{
  echo "# kill -9 of a random worker every 200 ms for $CHAOS s, wrk -c50, 4 workers ($(date -u +%Y-%m-%d))"
  echo
  echo "- kills: $kills"
  echo "- requests: $done_; non-2xx: ${bad:-0}; socket errors: ${errs:-none}"
  echo "- master up afterwards: $up, with $serving workers; a fresh request: $ok"
  echo "- the master logged $(grep -c 'killed by signal 9' "$WORK/log" || true) workers killed by signal 9, and $(grep -ci 'back-off\|backing off\|waiting' "$WORK/log" || true) back-off lines"
  echo "- wrk's failures per kill: $(awk -v e="$(sed -n 's/.*read \([0-9]*\),.*/\1/p' "$WORK/wrk")" -v k="$kills" 'BEGIN { printf "%.1f", (e + 0) / (k ? k : 1) }') (50 connections over 4 workers: about 12 on each)"
} | tee "$OUT"
