#!/usr/bin/env bash
# Slow clients against one oxgate worker with one Python thread (issue #17),
# each attack from slowhttptest while a probe makes a fresh request every
# 100 ms:
#   slowloris:  -H, 1000 connections, a header line every 10 s
#   slow POST:  -B, 1000 connections, a 1 MiB body at a few bytes a second
# Prints, for each, the probes answered and their p50/p99, and how many of
# the slow connections oxgate had closed by the end; writes
# bench/results/slow_clients.md.
#
#   bench/slow_clients.sh            # 60 s each
#   LENGTH=90 bench/slow_clients.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
LENGTH=${LENGTH:-60}
PORT=${PORT:-18600}
OUT=$HERE/results/slow_clients.md
command -v slowhttptest >/dev/null || { apt-get update -qq && apt-get install -y -qq slowhttptest; }
(cd "$ROOT" && cargo build --release --locked -q)
WORK=$(mktemp -d)
trap 'pkill -f "oxgate --http-socket 127.0.0.1:$PORT" || true; rm -rf "$WORK"' EXIT

probe() { # seconds -> "answered/sent p50 p99"
  python3 - "$PORT" "$1" <<'PY'
import http.client, sys, time
port, dur = int(sys.argv[1]), float(sys.argv[2])
lat, sent, end = [], 0, time.time() + dur
while time.time() < end:
    sent += 1
    t = time.time()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/env")
        r = c.getresponse()
        r.read()
        c.close()
        if r.status == 200:
            lat.append(time.time() - t)
    except OSError:
        pass
    time.sleep(0.1)
lat.sort()
q = lambda f: lat[min(len(lat) - 1, int(len(lat) * f))] * 1e3 if lat else float("nan")
print(f"{len(lat)}/{sent} {q(0.5):.1f} {q(0.99):.1f}")
PY
}

attack() { # name, slowhttptest arguments...
  local name=$1
  shift
  "$ROOT/target/release/oxgate" --http-socket 127.0.0.1:$PORT --wsgi-file "$ROOT/tests/apps/validated.py" \
    --processes 1 --threads 1 --disable-logging >"$WORK/$name.log" 2>&1 &
  sleep 1.5
  slowhttptest "$@" -l "$LENGTH" -u "http://127.0.0.1:$PORT/echo" -g -o "$WORK/$name" >"$WORK/$name.out" 2>&1 &
  local attacker=$!
  sleep 5  # the connections are open
  read -r answered p50 p99 < <(probe $((LENGTH - 10)))
  wait $attacker || true
  # slowhttptest's last sample: seconds,closed,pending,connected,error,service
  local last
  last=$(tail -1 "$WORK/$name.csv")
  local closed connected
  closed=$(cut -d, -f2 <<<"$last")
  connected=$(cut -d, -f4 <<<"$last")
  pkill -f "oxgate --http-socket 127.0.0.1:$PORT" || true
  sleep 1
  echo "| $name | $answered | $p50 ms | $p99 ms | $closed closed, $connected still open |"
}

{
  echo "# Slow clients: one worker, one Python thread ($(date -u +%Y-%m-%d), ${LENGTH} s each)"
  echo
  echo "| attack | probes answered | p50 | p99 | slow connections at the end |"
  echo "|---|---|---|---|---|"
  attack slowloris -H -c 1000 -i 10 -r 200 -x 24
  attack slow_post -B -c 1000 -i 1 -r 200 -s 1048576 -x 2
} | tee "$OUT"
