#!/usr/bin/env bash
# Memory of 4 Flask workers: oxgate (preload + gc.freeze) beside uWSGI
# (--master, preload: its default), in one run. Prints PSS per worker and
# in total after the same warm-up load. Uses the venv bench/anchors.sh made
# (run bench/run.sh once first).
#   bench/pss.sh [workers]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
A="${ANCHORS_DIR:-$HERE/.anchors}"
N=${1:-4}
[[ -x "$A/venv/bin/uwsgi" && -f "$A/apps/flaskhello.py" ]] || { echo "run bench/run.sh first (it makes $A)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --locked -q)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
measure() { # name pid port
  local name=$1 pid=$2 p=$3 kids total=0 list=""
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
  wrk -t1 -c8 -d3s "http://127.0.0.1:$p/" >/dev/null
  kids=$(cat "/proc/$pid/task/$pid/children")
  for k in $kids; do v=$(pss "$k"); total=$((total + v)); list="$list $v"; done
  printf '%-7s workers PSS KiB:%s  sum %d  per worker %d  master PSS %d\n' "$name" "$list" "$total" \
    $((total / $(wc -w <<<"$kids"))) "$(pss "$pid")"
  echo "$total" >"/tmp/pss.$name"
}
P=$(port)
"$ROOT/target/release/oxgate" --http-socket "127.0.0.1:$P" --processes "$N" --home "$A/venv" \
  --chdir "$A/apps" --wsgi-file "$A/apps/flaskhello.py" 2>/dev/null &
OX=$!
measure oxgate $OX "$P"; kill $OX; wait $OX 2>/dev/null || true
P=$(port)
(cd "$A/apps" && exec "$A/venv/bin/uwsgi" --http-socket "127.0.0.1:$P" --master --processes "$N" \
  --wsgi-file "$A/apps/flaskhello.py" --disable-logging --die-on-term) 2>/dev/null &
UW=$!
measure uwsgi $UW "$P"; kill $UW; wait $UW 2>/dev/null || true
awk -v o="$(cat /tmp/pss.oxgate)" -v u="$(cat /tmp/pss.uwsgi)" 'BEGIN {printf "oxgate / uwsgi workers PSS: %.2f\n", o / u}'
