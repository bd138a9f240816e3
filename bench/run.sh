#!/usr/bin/env bash
# oxgate beside bjoern, Granian, uWSGI and Gunicorn in one run, on this
# machine: builds oxgate, installs the Debian tools the harness needs, then
# runs anchors.sh (the harness venv holds the peers). Results, with ratios
# of oxgate to each peer, go to bench/.anchors/results/<time>/summary.md.
#
#   bench/run.sh                                  # all scenarios, 3 x 10 s each
#   SCENARIOS="direct flask" REPS=3 bench/run.sh  # the per-core targets only
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

need=()
for pkg in wrk nginx curl; do command -v "$pkg" >/dev/null || [[ -x /usr/sbin/$pkg ]] || need+=("$pkg"); done
[[ -e /usr/include/ev.h ]] || need+=(libev-dev)   # bjoern builds against libev
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

(cd "$ROOT" && cargo build --release --locked)
# One process, one Python thread: the same shape as the peers' single worker.
# (not a ${VAR:-default}: the braces of the placeholders would end it early)
if [[ -z "${OXGATE_CMD:-}" ]]; then
  OXGATE_CMD="$ROOT/target/release/oxgate --http-socket {host}:{port} --wsgi-file {app} --home {venv} --processes 1 --disable-logging"
fi
export OXGATE_CMD
exec "$HERE/anchors.sh" "$@"
