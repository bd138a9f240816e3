#!/usr/bin/env bash
# Two oxgate binaries side by side in one run, alternating, on this
# machine: hello world and Flask hello, one worker pinned to core 0, wrk
# -t1 -c50 on core 1 (as bench/quick.sh). Prints each run, then the
# medians and the ratio new/old of req/s and of CPU µs per request.
#   bench/compare.sh OLD_BIN NEW_BIN [reps] [seconds]
#   CONNS=1000 SCENARIOS=hello bench/compare.sh OLD_BIN NEW_BIN
set -euo pipefail
OLD=$1 NEW=$2 REPS=${3:-5} DUR=${4:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv-test}
declare -A APPS=([hello]="--wsgi-file $ROOT/examples/hello.py"
                 [flask]="--wsgi-file $ROOT/tests/apps/flask_app.py --callable app")
OUT=$(mktemp)
for scenario in ${SCENARIOS:-hello flask}; do
  for rep in $(seq "$REPS"); do
    for which in old new; do
      bin=$OLD; [[ $which == new ]] && bin=$NEW
      # shellcheck disable=SC2086
      line=$(OXGATE_BIN=$bin CONNS=${CONNS:-50} "$ROOT/bench/quick.sh" "$DUR" -- ${APPS[$scenario]} --home "$VENV" \
             --processes 1 --disable-logging --listen 4096)
      echo "$scenario $which $line" | tee -a "$OUT"
    done
  done
done
python3 - "$OUT" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    scenario, which, rps = f[0], f[1], float(f[2])
    cpu = float(f[f.index("user") + 1]) + float(f[f.index("sys") + 1])
    rows.setdefault((scenario, which), []).append((rps, cpu))
print("\n| scenario | old req/s | new req/s | ratio | old CPU µs/req | new CPU µs/req | ratio |")
print("|---|---|---|---|---|---|---|")
for scenario in ("hello", "flask"):
    if (scenario, "old") not in rows:
        continue
    o, n = rows[(scenario, "old")], rows[(scenario, "new")]
    orps, nrps = statistics.median(r for r, _ in o), statistics.median(r for r, _ in n)
    ocpu, ncpu = statistics.median(c for _, c in o), statistics.median(c for _, c in n)
    print(f"| {scenario} | {orps:.0f} | {nrps:.0f} | {nrps/orps:.3f} | {ocpu:.2f} | {ncpu:.2f} | {ncpu/ocpu:.3f} |")
PY
rm -f "$OUT"
