#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, builds,
# runs the Rust unit tests, then drives the real binary with pytest; then
# builds the wheel pip installs and runs the core tests against that.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase's time, so a slow CI run says where its time went.
phase_start=$SECONDS
phase() {
  echo "test.sh: $1 took $((SECONDS - phase_start)) s (total $SECONDS s)" >&2
  phase_start=$SECONDS
}

# Debian packages the tests use (nginx is the front end in front of the
# uwsgi sockets; tmux drives uwsgitop and oxgate top; strace watches for
# sendfile).
need=()
command -v curl >/dev/null || need+=(curl)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)
# nginx's brotli_static, to compare precompressed .br files with.
[ -f /usr/lib/nginx/modules/ngx_http_brotli_static_module.so ] || need+=(libnginx-mod-http-brotli-static)
command -v cgi-fcgi >/dev/null || need+=(libfcgi-bin)
command -v tmux >/dev/null || need+=(tmux)
command -v strace >/dev/null || need+=(strace)
# systemd-analyze and systemd-socket-activate check packaging/'s units;
# logrotate checks its snippet.
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v logrotate >/dev/null || need+=(logrotate)
# HAProxy and wrk: the rolling restart behind a balancer, under load.
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/sbin/apache2 ] || need+=(apache2-bin)
[ -x /usr/sbin/lighttpd ] || need+=(lighttpd)
# CGI and FastCGI apps: PHP (php-cgi, php-fpm), the real fcgiwrap to compare
# with, and Perl's FCGI module for a Perl FastCGI app.
command -v php-cgi >/dev/null || need+=(php-cgi)
compgen -G '/usr/sbin/php-fpm*' >/dev/null || need+=(php-fpm)
[ -x /usr/sbin/fcgiwrap ] || need+=(fcgiwrap)
perl -MFCGI -e1 2>/dev/null || need+=(libfcgi-perl)
# TLS and HTTP/2: h2load drives 100 streams on one connection; openssl
# makes the test certificates and checks protocol versions.
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
# ss reads a listening socket's backlog (the abstract socket test).
command -v ss >/dev/null || need+=(iproute2)
# uWSGI (a peer for the stats tests) is built from source by pip.
command -v cc >/dev/null || need+=(gcc libc6-dev)
# libFuzzer, for the fuzz smoke, is C++.
command -v c++ >/dev/null || need+=(g++)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
phase "Debian packages"

# A virtualenv with the peer apps (Flask, Django, httpbin) and pytest, pinned.
# It is made from the interpreter oxgate is built against.
PY="${PYO3_PYTHON:-python3}"
VENV=.venv-test
if ! [ -x "$VENV/bin/python" ] || ! cmp -s tests/requirements.txt "$VENV/.requirements"; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt "$VENV/.requirements"
fi

# Gunicorn's request corpus (tests/requests/ and its loader, from the sdist
# of the gunicorn tests/requirements.txt pins): test_http_request_corpus.py;
# and the sdist, whose docs test_gunicorn_config.py reads.
CORPUS=target/gunicorn-corpus
GUNICORN=$(sed -n 's/^gunicorn==//p' tests/requirements.txt)
if ! [ -f "$CORPUS/$GUNICORN" ]; then
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "gunicorn==$GUNICORN" -d "$tmp"
  tar xzf "$tmp/gunicorn-$GUNICORN.tar.gz" -C "$tmp"
  rm -rf "$CORPUS" && mkdir -p "$CORPUS"
  cp -r "$tmp/gunicorn-$GUNICORN/tests/treq.py" "$tmp/gunicorn-$GUNICORN/tests/requests" "$CORPUS/"
  # The sdist itself: test_gunicorn_config.py reads its docs' command lines.
  cp "$tmp/gunicorn-$GUNICORN.tar.gz" "$CORPUS/"
  touch "$CORPUS/$GUNICORN"
  rm -rf "$tmp"
fi
phase "test venv and corpus"

# The ci profile (Cargo.toml) is the release profile's code built in a
# third of the time: the tests check behaviour, bench/ measures --release.
cargo build --profile ci --locked
phase "build"
# Imports point one way (docs/architecture.md); every unsafe block says why
# it is sound (lib.rs denies clippy::undocumented_unsafe_blocks).
python3 scripts/layers.py
cargo clippy --profile ci --locked --all-targets --quiet
phase "layers and clippy"
cargo test --profile ci --locked --quiet
phase "Rust tests"
# Every cargo-fuzz target, 10 s each (scripts/fuzz.sh runs them for minutes).
bash scripts/fuzz_smoke.sh 10
phase "fuzz smoke"
# Two at a time (pytest-xdist): most tests wait on a server, a peer or a
# timeout, not on the CPU; one at a time took 845 s here, two take 430 s.
# Tests pick their ports at run time and write under their own tmp_path.
OXGATE_BIN="$PWD/target/ci/oxgate" "$VENV/bin/python" -m pytest tests -q -rs -p no:cacheprovider \
  -n 2 --durations=15 "$@"
phase "pytest against the binary"

# The `oxgate` pip installs (pyext/ and python/oxgate/, built by maturin
# against the same interpreter), in a fresh venv with the test apps: the
# core tests again, through its console script. It shares the binary's
# target directory, so only pyo3 and oxgate are built again (the
# extension's pyo3 links no libpython); the next binary build rebuilds
# those two in turn.
#
# The core tests are those where the wheel differs from the binary: who
# starts CPython and loads the apps (loading, frameworks, threads, errors),
# the processes it forks and re-executes (reloads run the console script
# again), the uvicorn command line and the commands pip installs. What
# happens once an app is loaded is the same Rust code in both and runs
# once, above: the protocols, PEP 3333, ASGI and WebSocket, the Gunicorn
# settings, static files, CGI/FastCGI, TLS and the limits. (The wheel pass
# ran those too, until CI neared 30 minutes: 207 s of its 366.)
CORE_TESTS=(
  tests/test_pip_install.py tests/test_app_loading.py tests/test_frameworks.py
  tests/test_threads.py tests/test_app_errors.py tests/test_process.py tests/test_reload.py
  tests/test_uvicorn_command_line.py tests/test_packaging.py
)
rm -f target/wheels/oxgate-*.whl
"$VENV/bin/maturin" build --profile ci --locked --quiet --target-dir target \
  --interpreter "$VENV/bin/python" --out target/wheels
phase "wheel build"
WHEEL_VENV=.venv-wheel
rm -rf "$WHEEL_VENV"
"$PY" -m venv "$WHEEL_VENV"
"$WHEEL_VENV/bin/pip" install -q --disable-pip-version-check target/wheels/oxgate-*.whl -r tests/requirements.txt
phase "wheel venv"
OXGATE_BIN="$PWD/$WHEEL_VENV/bin/oxgate" "$WHEEL_VENV/bin/python" -m pytest "${CORE_TESTS[@]}" -q -rs \
  -p no:cacheprovider -n 2 --durations=10 "$@"
phase "core tests against the wheel"
