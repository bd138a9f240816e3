#!/usr/bin/env bash
# A short run of every cargo-fuzz target (default 20 s each, two at a time),
# for CI: a target that no longer builds, or a crash a fuzzer finds within
# seconds, fails the run. scripts/fuzz.sh runs them for minutes.
#   scripts/fuzz_smoke.sh [seconds]
#
# Built without cargo-fuzz (not packaged here) and without AddressSanitizer
# (it needs nightly flags): the same coverage instrumentation cargo-fuzz
# asks rustc for, on stable, and libFuzzer from the libfuzzer-sys crate.
# The codecs are safe Rust, so a memory fault would be a panic anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
OUT=target/fuzz
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
cargo build --manifest-path fuzz/Cargo.toml --locked --profile smoke --target "$TRIPLE" \
  --target-dir "$OUT" --bins --quiet
BIN="$OUT/$TRIPLE/smoke"
TARGETS=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^oxgate-fuzz$')
LOGS=$(mktemp -d)
run() {
  local t=$1 corpus="$LOGS/corpus-$1"
  mkdir -p "$corpus"
  if (cd "$LOGS" && "$OLDPWD/$BIN/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "$corpus" >"$LOGS/$t.log" 2>&1); then
    echo "fuzz smoke: $t: $(sed -n 's/^stat::number_of_executed_units: *//p' "$LOGS/$t.log") runs in $SECS s, no crash"
  else
    echo "fuzz smoke: $t FAILED (its input is kept in $LOGS):" >&2
    grep -v '^#' "$LOGS/$t.log" | tail -40 >&2
    return 1
  fi
}
export -f run
export BIN SECS LOGS
echo "$TARGETS" | xargs -P 2 -I{} bash -c 'run {}'
rm -rf "$LOGS"
