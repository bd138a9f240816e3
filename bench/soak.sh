#!/usr/bin/env bash
# The soak (issue #17): TOTAL requests (2 million) of a mix (hello, a Flask
# view, a 16 KiB upload, a streamed response) on 4 workers under wrk -c50.
# Samples the RSS and open fds of the master and workers together, under
# the load, after a warm-up (a tenth of the run) and near its end, and prints the drift and
# wrk's failures; writes bench/results/soak.md.
#
#   bench/soak.sh
#   TOTAL=200000 bench/soak.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TOTAL=${TOTAL:-2000000}
PORT=${PORT:-18900}
OUT=$HERE/results/soak.md
PY=${PYTHON:-$ROOT/.venv-test/bin/python}
. "$HERE/under_load.sh"
start_master --home "$(dirname "$(dirname "$PY")")" --wsgi-file "$HERE/soak/mixed.py"
curl -sf "http://127.0.0.1:$PORT/flask/" >/dev/null

pids() { echo $MASTER $(pgrep -P $MASTER); }
rss() { local t=0; for p in $(pids); do t=$((t + $(awk '/^VmRSS/ {print $2}' /proc/$p/status))); done; echo $t; }
fds() { local t=0; for p in $(pids); do t=$((t + $(ls /proc/$p/fd | wc -l))); done; echo $t; }
# wrk runs for a time, not a count: the time comes from a short run's rate.
rate=$(wrk -t1 -c50 -d5s -s "$HERE/soak/mixed.lua" "http://127.0.0.1:$PORT" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
secs=$(awk -v t="$TOTAL" -v r="$rate" 'BEGIN { printf "%d", t / r + 1 }')
wrk -t1 -c50 -d${secs}s -s "$HERE/soak/mixed.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk" &
LOAD=$!
# Both samples under load (the same 50 connections open).
sleep $((secs / 10 + 1))
rss0=$(rss); fds0=$(fds)
late=$((secs - secs / 10 - 4))
sleep $((late > 0 ? late : 1))
rss1=$(rss); fds1=$(fds)
wait $LOAD
done_=$(wrk_requests "$WORK/wrk")
bad=$(wrk_non2xx "$WORK/wrk")
errs=$(wrk_errors "$WORK/wrk")
drift() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f%%", (b - a) * 100 / a }'; }
{
  echo "# Soak: $done_ mixed requests on 4 workers, wrk -c50, ${secs} s ($(date -u +%Y-%m-%d))"
  echo
  echo "| | after warm-up | near the end | drift |"
  echo "|---|---|---|---|"
  echo "| RSS, master and workers | $rss0 KiB | $rss1 KiB | $(drift $rss0 $rss1) |"
  echo "| open fds, master and workers | $fds0 | $fds1 | $(drift $fds0 $fds1) |"
  echo
  echo "Failures: non-2xx $bad; socket errors: $errs. Workers recycled or respawned: $(grep -c 'stopped\|killed' "$WORK/log" || true)."
} | tee "$OUT"
