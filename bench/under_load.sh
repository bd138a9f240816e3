# Sourced by bench/chaos.sh, reloads.sh and soak.sh (after they set ROOT and
# PORT): wrk and a release build, a work directory, oxgate started with 4
# workers on 127.0.0.1:$PORT, and wrk's report read back.

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
(cd "$ROOT" && cargo build --release --locked -q)
WORK=$(mktemp -d)

# start_master ARGS...: oxgate with 4 workers and these arguments, its log in
# $WORK/log, its pid in $MASTER; stopped, and $WORK removed, on exit.
start_master() {
  "$ROOT/target/release/oxgate" --http-socket 127.0.0.1:$PORT --processes 4 --disable-logging "$@" \
    >"$WORK/log" 2>&1 &
  MASTER=$!
  trap 'kill $MASTER 2>/dev/null || true; wait $MASTER 2>/dev/null || true; rm -rf "$WORK"' EXIT
  sleep 2
}

# The procs.py test app, whose answer names its worker, in $WORK.
procs_app() {
  cp "$ROOT/tests/apps/procs.py" "$WORK/" && echo v1 >"$WORK/version.txt"
  echo "$WORK/procs.py"
}

# From a wrk report: requests done; non-2xx/3xx answers; socket errors as
# wrk words them; socket errors summed.
wrk_requests() { sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$1"; }
wrk_non2xx() { sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$1" | grep . || echo 0; }
wrk_errors() { sed -n 's/.*Socket errors: \(.*\)/\1/p' "$1" | grep . || echo none; }
wrk_error_count() {
  sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$1" |
    awk '{ print $1 + $2 + $3 + $4 } END { if (NR == 0) print 0 }'
}
