#!/usr/bin/env bash
# Performance at every concurrency (issue #20): oxgate beside bjoern and
# Granian (one blocking thread, as oxgate's one Python thread), hello world
# and Flask hello, at each connection count in one run. Each count is one
# bench/run.sh (anchors.sh: 1 worker pinned to core 0, wrk -t1 on core 1),
# the servers alternating within it. Prints one table of medians and ratios
# and writes it to bench/.anchors/concurrency/<time>/table.md.
#
#   bench/concurrency.sh                        # 1 10 50 256 1000 10000 connections
#   CONNS_LIST="10 1000" bench/concurrency.sh   # the regression check: one command
#   REPS=3 DURATION=8 SCENARIOS=direct SERVERS="bjoern oxgate" bench/concurrency.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CONNS_LIST=${CONNS_LIST:-"1 10 50 256 1000 10000"}
export SCENARIOS=${SCENARIOS:-"direct flask"}
export SERVERS=${SERVERS:-"bjoern granian-bt1 oxgate"}
export REPS=${REPS:-3} DURATION=${DURATION:-8} PROBES=${PROBES:-0}
# wrk holds every connection open, and so does the server: 10,000 of them
# need more than the usual 1,024 descriptors (raised here, not on the machine).
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) > 12000 )) || echo "note: open-files limit $(ulimit -n); 10,000 connections may fail" >&2
# A listen queue that takes 10,000 connections opened at once; the peers
# take the kernel's limit or their own default.
if [[ -z "${OXGATE_CMD:-}" ]]; then
  ROOT=$(dirname "$HERE")
  OXGATE_CMD="$ROOT/target/release/oxgate --http-socket {host}:{port} --wsgi-file {app} --home {venv} --processes 1 --disable-logging --listen 4096"
fi
export OXGATE_CMD
OUT=$HERE/.anchors/concurrency/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
for conns in $CONNS_LIST; do
  echo "== $conns connections" >&2
  RESULTS=$OUT/c$conns CONNS=$conns "$HERE/run.sh" >"$OUT/c$conns.log" 2>&1 \
    || echo "   run failed: see $OUT/c$conns.log" >&2
done
python3 - "$OUT" $CONNS_LIST <<'PY' | tee "$OUT/table.md"
import csv, statistics, sys, os
out, counts = sys.argv[1], sys.argv[2:]
def med(rows, col):
    v = []
    for r in rows:
        try:
            v.append(float(r[col]))
        except (ValueError, IndexError):
            pass
    return statistics.median(v) if v else None
def fmt(x, spec="{:.0f}"):
    return "n/a" if x is None else spec.format(x)
def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}×"
print("| app | connections | oxgate req/s | ÷ bjoern | ÷ Granian | p99 ms oxgate / bjoern / Granian | p99.9 ms oxgate / bjoern / Granian | CPU µs/req oxgate / bjoern |")
print("|---|---|---|---|---|---|---|---|")
for scen, app in (("direct", "hello"), ("flask", "Flask")):
    for c in counts:
        path = os.path.join(out, f"c{c}", "results.tsv")
        if not os.path.exists(path):
            continue
        rows = [r for r in csv.reader(open(path), delimiter="\t") if len(r) > 5 and r[0] == scen and r[3] == "OK"]
        if not rows:
            continue
        by = {s: [r for r in rows if r[1] == s] for s in ("oxgate", "bjoern", "granian-bt1")}
        rps = {s: med(v, 5) for s, v in by.items()}
        p99 = {s: med(v, 7) for s, v in by.items()}
        cpu = {s: med(v, 18) for s, v in by.items()}
        p999 = {s: med(v, 19) for s, v in by.items()}
        print(f"| {app} | {c} | {fmt(rps['oxgate'])} | {ratio(rps['oxgate'], rps['bjoern'])} | "
              f"{ratio(rps['oxgate'], rps['granian-bt1'])} | "
              f"{fmt(p99['oxgate'], '{:.2f}')} / {fmt(p99['bjoern'], '{:.2f}')} / {fmt(p99['granian-bt1'], '{:.2f}')} | "
              f"{fmt(p999['oxgate'], '{:.2f}')} / {fmt(p999['bjoern'], '{:.2f}')} / {fmt(p999['granian-bt1'], '{:.2f}')} | "
              f"{fmt(cpu['oxgate'], '{:.1f}')} / {fmt(cpu['bjoern'], '{:.1f}')} |")
PY
echo "results: $OUT" >&2
