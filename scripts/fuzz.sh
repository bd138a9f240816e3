#!/usr/bin/env bash
# Runs each cargo-fuzz target for a while (default 600 s each) and prints
# the executions; a crash or hang fails the script. CI runs every target
# for 20 s instead (scripts/fuzz_smoke.sh).
#   scripts/fuzz.sh [seconds]      scripts/fuzz.sh 5 uwsgi
# Needs cargo-fuzz (cargo install cargo-fuzz). This machine has only stable
# Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the flags it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
shift || true
TARGETS=${*:-uwsgi scgi fastcgi cgi cgi_response http_head config_files static_path permessage_deflate h1_framing byte_ranges}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in $TARGETS; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: $SECS s"
  log=$(mktemp)
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$SECS" \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "== $t FAILED (the input is under fuzz/artifacts/$t)" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss|Done" "$log" || true
  rm -f "$log"
done
