#!/usr/bin/env bash
# Two oxgate binaries side by side on HTTP/2, alternating, in one run: hello
# world (examples/hello.py), one worker pinned to core 0 on an
# --http-socket (h2c) and an --https-socket (a self-signed P-256
# certificate), h2load on core 1: h2c -c1 -m100, TLS -c1 -m100 and TLS
# -c10 -m10. Prints each run, then the medians and the ratio new/old.
#   bench/h2_compare.sh OLD_BIN NEW_BIN [reps] [seconds]
# Never run it while something else builds: the figures would be noise.
set -euo pipefail
OLD=$1 NEW=$2 REPS=${3:-5} DUR=${4:-6}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/bench/.h2_compare
PORT=${PORT:-18777} TPORT=${TPORT:-18778}
command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
mkdir -p "$DIR"
CRT=$DIR/site.crt KEY=$DIR/site.key
[[ -f $CRT ]] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$KEY" \
  -out "$CRT" -days 3650 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
OUT=$DIR/results.tsv
: >"$OUT"
for rep in $(seq "$REPS"); do
  for which in old new; do
    bin=$OLD; [[ $which == new ]] && bin=$NEW
    taskset -c 0 "$bin" --http-socket "127.0.0.1:$PORT" --https-socket "127.0.0.1:$TPORT,$CRT,$KEY" \
      --wsgi-file "$ROOT/examples/hello.py" --processes 1 --disable-logging >"$DIR/$which.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
    for run in "h2c -c1 -m100 http://127.0.0.1:$PORT/" "tls -c1 -m100 https://127.0.0.1:$TPORT/" \
               "tls10 -c10 -m10 https://127.0.0.1:$TPORT/"; do
      read -r name c m url <<<"$run"
      taskset -c 1 h2load "$c" "$m" -D 1 "$url" >/dev/null 2>&1
      rps=$(taskset -c 1 h2load "$c" "$m" -D "$DUR" "$url" 2>&1 | awk '/^finished in/ {print $4}')
      printf '%s\t%s\t%s\t%s\n' "$rep" "$which" "$name" "$rps" | tee -a "$OUT"
    done
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  done
done
python3 - "$OUT" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _rep, which, name, rps = line.split("\t")
    runs[(name, which)].append(float(rps))
for name in ("h2c", "tls", "tls10"):
    old, new = statistics.median(runs[(name, "old")]), statistics.median(runs[(name, "new")])
    print(f"{name}: old {old:,.0f} req/s, new {new:,.0f} req/s, new/old {new / old:.3f}")
PY
