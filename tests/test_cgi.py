"""CGI scripts (issue #14): `--cgi [MOUNT=]DIR` runs shell, Perl, Python and
PHP scripts per request (RFC 3875), over HTTP and behind real nginx in
fcgiwrap's role, compared there with the real fcgiwrap; and every bad case:
timeouts, broken scripts, forbidden names, traversal, zombies."""
import contextlib
import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from helpers import (ECHO, alive, fcgi_request, free_port, listens, packet, process_state, raw_request, read_records,
                     nginx_serving, run_fail, start_nginx, stdout_of, uwsgi_request, wait_for)

SHOWN = ("REQUEST_METHOD", "QUERY_STRING", "SCRIPT_NAME", "PATH_INFO", "CONTENT_LENGTH", "CONTENT_TYPE")

ECHO_SH = r"""#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
for v in REQUEST_METHOD QUERY_STRING SCRIPT_NAME PATH_INFO CONTENT_LENGTH CONTENT_TYPE; do
  eval "printf '%s=%s\n' $v \"\$$v\""
done
printf 'BODY_SHA256=%s\n' "$(head -c "${CONTENT_LENGTH:-0}" | sha256sum | cut -d' ' -f1)"
"""

ECHO_PL = r"""#!/usr/bin/perl
use strict; use warnings; use Digest::SHA qw(sha256_hex);
binmode STDIN; my $body = ''; my $n = $ENV{CONTENT_LENGTH} || 0;
while (length($body) < $n) { my $r = read(STDIN, my $buf, $n - length($body)); last unless $r; $body .= $buf; }
print "Content-Type: text/plain\r\n\r\n";
print "$_=" . ($ENV{$_} // '') . "\n" for qw(REQUEST_METHOD QUERY_STRING SCRIPT_NAME PATH_INFO CONTENT_LENGTH CONTENT_TYPE);
print "BODY_SHA256=" . sha256_hex($body) . "\n";
"""

# Not executable: run by --cgi-helper .py=PYTHON.
ECHO_PY = r"""import hashlib, os, sys
n = int(os.environ.get("CONTENT_LENGTH") or 0)
body = sys.stdin.buffer.read(n)
sys.stdout.write("Content-Type: text/plain\r\n\r\n")
for k in ("REQUEST_METHOD", "QUERY_STRING", "SCRIPT_NAME", "PATH_INFO", "CONTENT_LENGTH", "CONTENT_TYPE"):
    sys.stdout.write(f"{k}={os.environ.get(k, '')}\n")
sys.stdout.write(f"BODY_SHA256={hashlib.sha256(body).hexdigest()}\n")
"""

ENV_SH = """#!/bin/sh
printf 'Content-Type: text/plain\\n\\n'
env
"""


def script(path, text, mode=0o755):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def cgi_dir(tmp_path):
    d = tmp_path / "cgi"
    script(d / "echo.sh", ECHO_SH)
    script(d / "echo.pl", ECHO_PL)
    script(d / "echo.py", ECHO_PY, mode=0o644)
    script(d / "env.cgi", ENV_SH)
    script(d / "sub" / "index.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nindex of sub\\n'\n")
    script(d / "local.cgi", "#!/bin/sh\nprintf 'Location: /echo.sh/after?redirected=1\\n\\n'\n")
    script(d / "away.cgi", "#!/bin/sh\nprintf 'Location: http://example.com/x\\n\\n'\n")
    script(d / "moved.cgi", "#!/bin/sh\nprintf 'Status: 301 Moved Permanently\\nLocation: /new\\n\\n'\n")
    script(d / "status.cgi", "#!/bin/sh\nprintf 'Status: 418 Short And Stout\\nContent-Type: text/plain\\nX-Kind: teapot\\n\\ntea\\n'\n")
    script(d / "nph-raw.cgi", "#!/bin/sh\nprintf 'HTTP/1.1 299 Raw Status\\r\\nContent-Type: text/plain\\r\\nX-Nph: yes\\r\\n\\r\\nunparsed\\n'\n")
    script(d / "noheader.cgi", "#!/bin/sh\necho 'just text, no header block'\n")
    script(d / "silent.cgi", "#!/bin/sh\nexit 3\n")
    script(d / "stderr.cgi", "#!/bin/sh\necho 'a warning from the script' >&2\nprintf 'Content-Type: text/plain\\n\\nok\\n'\n")
    script(d / "notexec.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nran\\n'\n", mode=0o644)
    script(d / "script.txt", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nran\\n'\n")
    (tmp_path / "outside.cgi").write_text("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nESCAPED\\n'\n")
    (tmp_path / "outside.cgi").chmod(0o755)
    os.symlink(tmp_path / "outside.cgi", d / "link-out.cgi")
    return d


def fields(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def cgi_server(serve, d, *extra):
    return serve("--cgi", str(d), "--cgi-helper", f".py={sys.executable}", "--cgi-timeout", "5", *extra)


def test_path_info_is_cleaned_as_script_name_is_as_apache_cleans_it(serve, cgi_dir):
    """`//` and `.` segments after the script go as they do before it (and
    as Apache, lighttpd and nginx clean the whole path): a script routing
    on PATH_INFO sees one path whether oxgate or a web server took the
    request. It got them raw."""
    s = cgi_server(serve, cgi_dir)
    for raw, want in [("/echo.sh//a//b", "/a/b"), ("/echo.sh/./x", "/x"), ("/echo.sh/a/.", "/a/")]:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        c.request("GET", raw)
        f = fields(c.getresponse().read().decode())
        c.close()
        assert (f["SCRIPT_NAME"], f["PATH_INFO"]) == ("/echo.sh", want), (raw, f)


@pytest.mark.parametrize("name", ["echo.sh", "echo.pl", "echo.py"])
def test_get_with_a_query_and_path_info(serve, cgi_dir, name):
    s = cgi_server(serve, cgi_dir)
    r = requests.get(f"{s.url}/{name}/extra/path?a=1&b=two", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/plain"
    f = fields(r.text)
    assert f["REQUEST_METHOD"] == "GET"
    assert f["QUERY_STRING"] == "a=1&b=two"
    assert f["SCRIPT_NAME"] == f"/{name}"
    assert f["PATH_INFO"] == "/extra/path"
    assert f["BODY_SHA256"] == hashlib.sha256(b"").hexdigest()


def test_uwsgis_cgi_map_helper_is_cgi_helper(serve, cgi_dir, tmp_path):
    """uWSGI's CGI plugin has both names for one option; its ini files use
    either (cgi-map-helper was passed over, and the script got 403)."""
    ini = tmp_path / "cgi.ini"
    ini.write_text(f"[uwsgi]\ncgi = {cgi_dir}\ncgi-map-helper = .py={sys.executable}\n")
    s = serve("--ini", str(ini))
    r = requests.get(f"{s.url}/echo.py/x", timeout=10)
    assert r.status_code == 200 and fields(r.text)["PATH_INFO"] == "/x", (r.status_code, r.text)


@pytest.mark.parametrize("name", ["echo.sh", "echo.pl", "echo.py"])
def test_post_form_and_a_10_mib_upload(serve, cgi_dir, name):
    s = cgi_server(serve, cgi_dir)
    r = requests.post(f"{s.url}/{name}", data={"a": "1", "b": "x y"}, timeout=10)
    f = fields(r.text)
    assert f["REQUEST_METHOD"] == "POST"
    assert f["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert f["CONTENT_LENGTH"] == "9"
    assert f["BODY_SHA256"] == hashlib.sha256(b"a=1&b=x+y").hexdigest()
    big = os.urandom(10 << 20)
    r = requests.post(f"{s.url}/{name}", data=big, timeout=60)
    f = fields(r.text)
    assert f["CONTENT_LENGTH"] == str(len(big))
    assert f["BODY_SHA256"] == hashlib.sha256(big).hexdigest()


def test_a_chunked_upload_is_given_its_length(serve, cgi_dir):
    s = cgi_server(serve, cgi_dir)
    parts = [os.urandom(100_000) for _ in range(7)]
    r = requests.post(f"{s.url}/echo.sh", data=iter(parts), timeout=30)
    f = fields(r.text)
    assert f["CONTENT_LENGTH"] == str(sum(map(len, parts)))
    assert f["BODY_SHA256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_a_chunked_upload_past_64_mib_is_held_to_limit_post_not_to_memory(serve, cgi_dir):
    """A chunked body is read whole to give its length (git's pushes of
    large packs are chunked): past 1 MiB it waits in a temporary file, and
    --limit-post, not a fixed 64 MiB, is its limit."""
    s = cgi_server(serve, cgi_dir, "--limit-post", str(100 << 20))
    piece = os.urandom(1 << 20)
    r = requests.post(f"{s.url}/echo.sh", data=iter([piece] * 70), timeout=120)
    f = fields(r.text)
    assert r.status_code == 200 and f["CONTENT_LENGTH"] == str(70 << 20), r.text[:300]
    assert f["BODY_SHA256"] == hashlib.sha256(piece * 70).hexdigest()
    s = cgi_server(serve, cgi_dir, "--limit-post", str(2 << 20))
    r = requests.post(f"{s.url}/echo.sh", data=iter([piece] * 3), timeout=60)
    assert r.status_code == 413


def test_the_environment_is_rfc_3875_and_nothing_else(serve, cgi_dir):
    bin_dir = cgi_dir.parent / "bin"
    script(bin_dir / "myinterp", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nRAN_BY=myinterp\\n'\n")
    s = serve("--cgi", f"/cgi-bin={cgi_dir}", "--env", "GIVEN=by-env",
              env={"OXGATE_SECRET": "must-not-leak", "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    r = requests.get(f"{s.url}/cgi-bin/env.cgi/a/b?x=1", headers={"X-Custom": "v", "Proxy": "http://evil:1"},
                     timeout=10)
    env = fields(r.text)
    root = str(cgi_dir.resolve())
    expected = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SCRIPT_NAME": "/cgi-bin/env.cgi",
        "PATH_INFO": "/a/b",
        "PATH_TRANSLATED": root + "/a/b",
        "SCRIPT_FILENAME": root + "/env.cgi",
        "DOCUMENT_ROOT": root,
        "QUERY_STRING": "x=1",
        "REQUEST_URI": "/cgi-bin/env.cgi/a/b?x=1",
        "REQUEST_METHOD": "GET",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(s.port),
        # As Apache gives it.
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_X_CUSTOM": "v",
        "GIVEN": "by-env",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert env["REMOTE_PORT"].isdigit() and env["SERVER_SOFTWARE"].startswith("oxgate/")
    # Nothing of the server's own environment but its PATH, and no httpoxy.
    assert "OXGATE_SECRET" not in env and "HOME" not in env and "HTTP_PROXY" not in env
    assert env["PATH"] == f"{bin_dir}:{os.environ['PATH']}"
    # So `#!/usr/bin/env NAME` finds what oxgate would (python3 in
    # /usr/local/bin in Python's Docker images); it was a 502.
    script(cgi_dir / "by-env.cgi", "#!/usr/bin/env myinterp\n")
    assert fields(requests.get(f"{s.url}/cgi-bin/by-env.cgi", timeout=10).text) == {"RAN_BY": "myinterp"}
    # No arguments: not the script's own path as $1 (scripts that switch on
    # it to a command-line mode), nor RFC 3875's search words, which let a
    # query become options (php-cgi's CVE-2012-1823); as fcgiwrap runs it.
    script(cgi_dir / "args.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nARGC=%s\\n' \"$#\"\n")
    assert fields(requests.get(f"{s.url}/cgi-bin/args.cgi?-s+x", timeout=10).text) == {"ARGC": "0"}
    # Without PATH_INFO there is no PATH_TRANSLATED (RFC 3875 4.1.6).
    env = fields(requests.get(f"{s.url}/cgi-bin/env.cgi", timeout=10).text)
    assert env["PATH_INFO"] == "" and "PATH_TRANSLATED" not in env


def test_cgi_unset_leaves_variables_out_and_the_plugins_other_options_are_named(serve, cgi_dir, tmp_path):
    """uWSGI's cgi-unset keeps a variable (the cookie, the credentials)
    from every script; it was passed over without a word, as were the cgi
    plugin's options oxgate does not have, which are now named."""
    ini = tmp_path / "cgi.ini"
    ini.write_text(f"[uwsgi]\ncgi = {cgi_dir}\ncgi-unset = HTTP_COOKIE\ncgi-unset = HTTP_AUTHORIZATION\n"
                   "cgi-from-docroot = true\ncgi-safe = /usr\n")
    s = serve("--ini", str(ini))
    env = fields(requests.get(f"{s.url}/env.cgi", headers={"Cookie": "session=secret", "Authorization": "Basic eA==",
                                                             "X-Kept": "yes"}, timeout=10).text)
    assert "HTTP_COOKIE" not in env and "HTTP_AUTHORIZATION" not in env and env["HTTP_X_KEPT"] == "yes"
    for name in ("cgi-from-docroot", "cgi-safe"):
        assert f"uWSGI option '{name}' is not implemented in oxgate yet" in s.log(), name


def test_status_headers_and_nph(serve, cgi_dir):
    s = cgi_server(serve, cgi_dir)
    r = requests.get(f"{s.url}/status.cgi", timeout=10)
    assert (r.status_code, r.reason, r.headers["X-Kind"], r.text) == (418, "Short And Stout", "teapot", "tea\n")
    assert "Status" not in r.headers
    r = requests.get(f"{s.url}/nph-raw.cgi", timeout=10)
    assert (r.status_code, r.reason, r.headers["X-Nph"], r.text) == (299, "Raw Status", "yes", "unparsed\n")
    # A status HTTP names no reason for, with none given: an empty one, as
    # Apache sends (not hyper's "<none>").
    script(cgi_dir / "odd.cgi", "#!/bin/sh\nprintf 'Status: 420\\n\\nodd'\n")
    r = requests.get(f"{s.url}/odd.cgi", timeout=10)
    assert (r.status_code, r.reason, r.text) == (420, "", "odd")
    # A Latin-1 reason (RFC 3875's *TEXT) goes out as its bytes, as Apache
    # sends it; it was a 502.
    script(cgi_dir / "latin1.cgi", "#!/bin/sh\nprintf 'Status: 404 Non trouv\\351\\nContent-Type: text/plain\\n\\nbody'\n")
    out = raw_request(s.port, b"GET /latin1.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404 Non trouv\xe9\r\n") and b"body" in out, out


def test_a_script_killed_by_a_signal_is_logged(serve, cgi_dir):
    """What it wrote before is sent (as by Apache and lighttpd), and may
    look whole to the client: the log says it crashed, as lighttpd's."""
    script(cgi_dir / "crash.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\npartial'\nkill -SEGV $$\n")
    s = cgi_server(serve, cgi_dir)
    assert requests.get(f"{s.url}/crash.cgi", timeout=10).text == "partial"
    s.wait_log("crash.cgi: the script was killed by SIGSEGV")


def test_redirects_local_and_client(serve, cgi_dir):
    s = cgi_server(serve, cgi_dir)
    # Local: the server answers with the other path, by GET, at once.
    r = requests.post(f"{s.url}/local.cgi", data=b"dropped", allow_redirects=False, timeout=10)
    f = fields(r.text)
    assert r.status_code == 200
    assert (f["REQUEST_METHOD"], f["SCRIPT_NAME"], f["PATH_INFO"], f["QUERY_STRING"]) == (
        "GET", "/echo.sh", "/after", "redirected=1")
    # Logged as the client asked it, with the final status, as Apache logs
    # an internal redirect (it named the path redirected to, and GET).
    s.wait_log("POST /local.cgi => generated")
    assert "/echo.sh/after" not in s.log()
    # The cookies it set come with the page it redirected to, as Apache's
    # mod_cgi keeps them: "set the session, then show the page".
    script(cgi_dir / "login.cgi", "#!/bin/sh\nprintf 'Location: /echo.sh/home\\nSet-Cookie: session=abc\\n"
                                  "Set-Cookie: theme=dark\\nX-Dropped: yes\\n\\n'\n")
    r = requests.get(f"{s.url}/login.cgi", allow_redirects=False, timeout=10)
    assert r.status_code == 200 and fields(r.text)["PATH_INFO"] == "/home"
    assert r.raw.headers.getlist("Set-Cookie") == ["session=abc", "theme=dark"]
    assert "X-Dropped" not in r.headers
    r = requests.get(f"{s.url}/away.cgi", allow_redirects=False, timeout=10)
    assert (r.status_code, r.headers["Location"]) == (302, "http://example.com/x")
    r = requests.get(f"{s.url}/moved.cgi", allow_redirects=False, timeout=10)
    assert (r.status_code, r.headers["Location"]) == (301, "/new")


def test_a_redirect_loop_ends(serve, cgi_dir):
    script(cgi_dir / "loop.cgi", "#!/bin/sh\nprintf 'Location: /loop.cgi\\n\\n'\n")
    s = cgi_server(serve, cgi_dir)
    assert requests.get(f"{s.url}/loop.cgi?first", timeout=10).status_code == 500
    assert "local redirects" in s.log()
    s.wait_log("GET /loop.cgi?first => generated")
    # To a script that may not run: the 403 is logged as asked too.
    script(cgi_dir / "forbidden.cgi", "#!/bin/sh\nprintf 'Location: /link-out.cgi\\n\\n'\n")
    assert requests.get(f"{s.url}/forbidden.cgi", timeout=10).status_code == 403
    s.wait_log("GET /forbidden.cgi => generated")
    assert "GET /link-out.cgi" not in s.log()


def test_the_response_is_streamed(serve, cgi_dir, tmp_path):
    go = tmp_path / "go"
    script(cgi_dir / "stream.cgi", f"""#!/bin/sh
printf 'Content-Type: text/plain\\n\\nfirst\\n'
while [ ! -e {go} ]; do sleep 0.05; done
printf 'second\\n'
""")
    s = cgi_server(serve, cgi_dir)
    with requests.get(f"{s.url}/stream.cgi", stream=True, timeout=20) as r:
        chunks = r.iter_content(chunk_size=None)
        # The first part arrives while the script still waits for `go`.
        assert next(chunks) == b"first\n"
        go.touch()
        assert b"".join(chunks) == b"second\n"


def test_index_and_directory_slash(serve, cgi_dir):
    s = cgi_server(serve, cgi_dir, "--cgi-index", "index.cgi")
    assert requests.get(f"{s.url}/sub/", timeout=10).text == "index of sub\n"
    r = requests.get(f"{s.url}/sub?x=1", allow_redirects=False, timeout=10)
    assert (r.status_code, r.headers["Location"]) == (301, "/sub/?x=1")


def test_one_script_for_a_whole_mount(serve, cgi_dir):
    s = serve("--cgi", f"/app={cgi_dir / 'echo.sh'}")
    f = fields(requests.get(f"{s.url}/app/any/path?q=1", timeout=10).text)
    assert (f["SCRIPT_NAME"], f["PATH_INFO"], f["QUERY_STRING"]) == ("/app", "/any/path", "q=1")
    # A NUL no environment can hold: a 400, as under a directory.
    assert requests.get(f"{s.url}/app/x%00y", timeout=10).status_code == 400


def test_beside_a_python_app(serve, cgi_dir):
    s = serve("--cgi", f"/cgi-bin={cgi_dir}", "--wsgi-file", ECHO)
    assert fields(requests.get(f"{s.url}/cgi-bin/echo.sh", timeout=10).text)["SCRIPT_NAME"] == "/cgi-bin/echo.sh"
    # Other paths, and a path with no script, are the app's.
    for path in ["/elsewhere", "/cgi-bin/missing.cgi"]:
        r = requests.get(f"{s.url}{path}", timeout=10)
        assert r.status_code == 200 and r.json()["path"] == path


def test_scripts_at_the_root_beside_a_python_app_leave_it_the_directories(serve, tmp_path):
    """Scripts mounted at / beside an app: a directory with no index
    script (the site's root first) is the app's, as every path that is not
    a script is. It was a 403, so the app's home page could not be
    reached. With no app, it is a 403 still."""
    d = tmp_path / "root"
    (d / "sub").mkdir(parents=True)
    (d / "hello.cgi").write_text("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhello\\n'\n")
    (d / "hello.cgi").chmod(0o755)
    s = serve("--cgi", str(d), "--wsgi-file", ECHO)
    assert requests.get(f"{s.url}/hello.cgi", timeout=10).text == "hello\n"
    for path in ["/", "/sub", "/sub/", "/sub/x"]:
        r = requests.get(f"{s.url}{path}", timeout=10, allow_redirects=False)
        assert r.status_code == 200 and r.json()["path"] == path, (path, r.status_code, r.text)
    alone = serve("--cgi", str(d))
    assert requests.get(f"{alone.url}/sub/", timeout=10).status_code == 403


def test_scripts_alone_start_no_python_and_log_their_requests(serve, cgi_dir):
    s = cgi_server(serve, cgi_dir)
    assert requests.get(f"{s.url}/stderr.cgi", timeout=10).text == "ok\n"
    assert requests.get(f"{s.url}/nothing-here", timeout=10).status_code == 404
    wait_for(lambda: "GET /nothing-here" in s.log(), what="the 404's log line")
    log = s.log()
    assert "no Python app" in log
    assert "GET /stderr.cgi => generated 3 bytes" in log and "(HTTP/1.1 200)" in log
    # Stderr goes to the log, a line at a time, with the script's name.
    assert f"CGI {cgi_dir.resolve()}/stderr.cgi: a warning from the script" in log


@pytest.mark.parametrize("path, status, logged", [
    ("/missing.cgi", 404, None),
    ("/notexec.cgi", 403, "notexec.cgi: not executable"),
    # Said, as Apache logs a link it does not follow; a bare 403 left
    # whoever deployed the scripts guessing.
    ("/link-out.cgi", 403, "link-out.cgi: a link out of the directory it is served from; answered 403"),
    ("/sub", 403, None),
])
def test_what_may_not_run(serve, cgi_dir, path, status, logged):
    s = cgi_server(serve, cgi_dir)
    r = requests.get(f"{s.url}{path}", timeout=10)
    assert r.status_code == status and "ESCAPED" not in r.text and "ran" not in r.text
    if logged:
        wait_for(lambda: logged in s.log(), what="why the script may not run")


def test_only_allowed_extensions_run(serve, cgi_dir):
    s = cgi_server(serve, cgi_dir, "--cgi-allowed-ext", ".sh,.pl")
    assert requests.get(f"{s.url}/echo.sh", timeout=10).status_code == 200
    assert requests.get(f"{s.url}/echo.pl", timeout=10).status_code == 200
    assert requests.get(f"{s.url}/script.txt", timeout=10).status_code == 403
    assert requests.get(f"{s.url}/env.cgi", timeout=10).status_code == 403
    # Said, as docs/cgi.md has it (the 403 came alone).
    s.wait_log("env.cgi: its name is not one --cgi-allowed-ext allows (.sh, .pl); answered 403")


def test_traversal_is_refused(serve, cgi_dir):
    s = cgi_server(serve, cgi_dir)
    for raw in ["/../outside.cgi", "/%2e%2e/outside.cgi", "/sub/..%2f..%2foutside.cgi", "/sub/%2E%2E/%2e%2e/outside.cgi"]:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        assert data.split(b" ", 2)[1] in (b"400", b"403", b"404"), (raw, data[:100])
        assert b"ESCAPED" not in data
    # The same over uwsgi, where the web server's path is taken as it is.
    port = free_port()
    serve("--uwsgi-socket", f"127.0.0.1:{port}", "--cgi", str(cgi_dir), socket_arg=False, wait=False)
    wait_for(lambda: listens(port), what="the uwsgi socket")
    resp = uwsgi_request(port, packet(list({"REQUEST_METHOD": "GET", "PATH_INFO": "/../outside.cgi",
                                       "SERVER_NAME": "x", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1"}.items())))
    assert resp.split(b" ", 2)[1] == b"400" and b"ESCAPED" not in resp
    resp = uwsgi_request(port, packet(list({"REQUEST_METHOD": "GET", "PATH_INFO": "/echo.sh/p", "QUERY_STRING": "u=1",
                                       "SERVER_NAME": "x", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1"}.items())))
    assert b" 200 " in resp.split(b"\r\n", 1)[0] and b"QUERY_STRING=u=1" in resp and b"PATH_INFO=/p" in resp


def test_path_info_never_leads_path_translated_out(serve, cgi_dir):
    """`..` after the script's name is refused too: PATH_TRANSLATED is the
    document root joined to PATH_INFO, and a script that opens it (as
    php-cgi does) would be led out of its directory."""
    s = cgi_server(serve, cgi_dir)
    for raw in ["/env.cgi/../../../etc/hostname", "/env.cgi/%2e%2e/%2e%2e/etc/hostname",
                "/env.cgi/x/..%2f..%2fy"]:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        assert data.split(b" ", 2)[1] == b"400", (raw, data[:200])
    # SCRIPT_NAME is the path walked, each segment once, as a web server
    # that merges slashes gives it.
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET //sub/./index.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    assert b"index of sub" in data
    f = fields(requests.get(f"{s.url}//./env.cgi/p", timeout=10).text)
    assert (f["SCRIPT_NAME"], f["PATH_INFO"]) == ("/env.cgi", "/p")
    # A mount of one script too.
    s = serve("--cgi", f"/one={cgi_dir / 'env.cgi'}")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET /one/a/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    assert data.split(b" ", 2)[1] == b"400", data[:200]


def test_a_chunked_body_is_not_also_said_to_be_chunked(serve, cgi_dir):
    """The server reads a chunked body and gives its length: a script told
    `Transfer-Encoding: chunked` as well (HTTP_TRANSFER_ENCODING) reads no
    body at all under werkzeug, as the RFC 3875 scripts would not."""
    s = cgi_server(serve, cgi_dir)
    r = requests.post(f"{s.url}/env.cgi", data=iter([b"a=1", b"&b=2"]), timeout=10)
    env = fields(r.text)
    assert env["CONTENT_LENGTH"] == "7"
    assert not {"HTTP_TRANSFER_ENCODING", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"} & set(env), env


def test_the_web_servers_document_root_is_passed_on(serve, cgi_dir, tmp_path):
    """In fcgiwrap's role the web server's DOCUMENT_ROOT reaches the script
    as it sent it, and PATH_TRANSLATED is under it, as fcgiwrap does; a
    root the script is not under (nginx's default, sent with every request
    by its uwsgi_params) is not, and the script's directory is."""
    sock = tmp_path / "oxgate.sock"
    serve("--fastcgi-socket", str(sock), "--cgi", str(cgi_dir), socket_arg=False, wait=False)
    wait_for(sock.exists, what="the FastCGI socket")
    for given, root in [(str(tmp_path), str(tmp_path)), ("/usr/share/nginx/html", str(cgi_dir.resolve()))]:
        params = {"REQUEST_METHOD": "GET", "SCRIPT_FILENAME": f"{cgi_dir}/env.cgi", "SCRIPT_NAME": "/env.cgi",
                  "PATH_INFO": "/x/y", "DOCUMENT_ROOT": given, "QUERY_STRING": "", "SERVER_NAME": "x",
                  "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_URI": "/env.cgi/x/y"}
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(sock))
            c.sendall(fcgi_request(1, list(params.items())))
            out = stdout_of(read_records(c), 1).decode()
        env = fields(out.split("\n\n", 1)[-1])
        assert (env.get("DOCUMENT_ROOT"), env.get("PATH_TRANSLATED")) == (root, root + "/x/y"), (given, out[:500])


@pytest.mark.parametrize("slash", ["", "/"])
def test_a_root_reached_through_a_link_is_found_by_the_web_servers_name_and_follows_a_deploy(serve, tmp_path, slash):
    """nginx's `root $D/current` with `--cgi $D/current/cgi-bin` (a trailing
    slash or not): the SCRIPT_FILENAME it sends names the script through
    the link (it was a 404, where fcgiwrap runs it) and its DOCUMENT_ROOT
    is passed on; a SCRIPT_FILENAME elsewhere leaves the web server's root
    out, the script being found by its path. A single-script mount follows
    the link a deploy moves, as Apache's ScriptAlias does (it ran the first
    release until a restart)."""
    for release in ("r1", "r2"):
        script(tmp_path / release / "cgi-bin" / "who.cgi",
               f"#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n{release} %s\\n' \"$DOCUMENT_ROOT\"\n")
    current = tmp_path / "current"
    current.symlink_to("r1")
    sock = tmp_path / "oxgate.sock"
    serve("--fastcgi-socket", str(sock), "--cgi", f"{current}/cgi-bin{slash}", socket_arg=False, wait=False)
    wait_for(sock.exists, what="the FastCGI socket")

    def ask(filename, root, name):
        params = {"REQUEST_METHOD": "GET", "SCRIPT_FILENAME": filename, "SCRIPT_NAME": name, "DOCUMENT_ROOT": root,
                  "QUERY_STRING": "", "SERVER_NAME": "x", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                  "REQUEST_URI": name}
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(sock))
            c.sendall(fcgi_request(1, list(params.items())))
            out = stdout_of(read_records(c), 1).decode()
        return out.split("\r\n\r\n", 1)[-1].split("\n\n", 1)[-1].strip()
    assert ask(f"{current}/cgi-bin/who.cgi", str(current), "/cgi-bin/who.cgi") == f"r1 {current}"
    assert ask("/var/www/html/who.cgi", "/var/www/html", "/who.cgi") == f"r1 {(tmp_path / 'r1' / 'cgi-bin').resolve()}"

    s = serve("--cgi", f"/app={current}/cgi-bin/who.cgi")
    assert requests.get(f"{s.url}/app", timeout=10).text.startswith("r1 ")
    (tmp_path / "next").symlink_to("r2")
    os.replace(tmp_path / "next", current)
    assert requests.get(f"{s.url}/app", timeout=10).text.startswith("r2 ")


def test_a_filter_that_writes_before_it_has_read_everything_does_not_deadlock(serve, cgi_dir):
    """`cat` as a CGI script writes its input back as it reads it: once
    more is written than the server holds back, the response starts while
    the body still goes in (before, both sides waited for the timeout)."""
    script(cgi_dir / "cat.cgi", "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\ncat\n")
    s = cgi_server(serve, cgi_dir)
    for n in (100_000, 1_500_000, 4_000_000):
        body = os.urandom(n)
        r = requests.post(f"{s.url}/cat.cgi", data=body, timeout=30)
        assert r.status_code == 200 and r.content == body, (n, r.status_code, len(r.content))


def test_a_script_that_reads_no_body_gets_its_response_to_the_client_whole(serve, cgi_dir):
    """A script that answers without reading a large upload: the server
    reads and drops the rest, so that the client, still sending, is not
    answered with a reset that takes the response with it."""
    script(cgi_dir / "noread.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhead -c 500000 /dev/zero\n")
    s = cgi_server(serve, cgi_dir)
    body = os.urandom(3_000_000)
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
            c.sendall(f"POST /noread.cgi HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n".encode())
            sender = threading.Thread(target=lambda: c.sendall(body), daemon=True)
            sender.start()
            data = b""
            try:
                while chunk := c.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
            sender.join(20)
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        assert len(data.split(b"\r\n\r\n", 1)[1]) >= 500_000, len(data)


def test_a_script_that_refuses_an_upload_unread_answers_at_once(serve, cgi_dir):
    """A script that answers 413 without reading a large upload: its answer
    goes out then, while the rest of the body is read and dropped beside
    it (not after it, and not against the script's timeout)."""
    script(cgi_dir / "reject.cgi", "#!/bin/sh\nprintf 'Status: 413 Too Large\\r\\nContent-Type: text/plain\\r\\n\\r\\nno\\n'\n")
    s = serve("--cgi", str(cgi_dir), "--cgi-timeout", "2")
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
        c.sendall(b"POST /reject.cgi HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n")

        def trickle():  # 10 MB at ~2 MB/s: past the timeout
            with contextlib.suppress(OSError):
                for _ in range(100):
                    c.sendall(b"x" * 100_000)
                    time.sleep(0.05)
        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        head = c.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert "held its output" not in s.log()


def test_a_slow_client_gets_a_finished_scripts_output_whole(serve, cgi_dir):
    """A client that reads 8 MB slower than --cgi-timeout gets all of it,
    with the body's proper end: the timeout counts the script's idleness,
    not the client's (whose own limit is --socket-timeout)."""
    script(cgi_dir / "sized.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhead -c 8000000 /dev/zero\n")
    s = serve("--cgi", str(cgi_dir), "--cgi-timeout", "1")
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.settimeout(20)
    c.connect(("127.0.0.1", s.port))
    c.sendall(b"GET /sized.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(3)
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.close()
    head, body = data.split(b"\r\n\r\n", 1)
    assert body.endswith(b"0\r\n\r\n") or b"content-length: 8000000" in head.lower(), data[-100:]
    assert body.count(b"\0") == 8_000_000


def test_a_daemon_in_a_session_of_its_own_does_not_hold_the_response(serve, cgi_dir, tmp_path):
    """A script that starts a daemon with setsid, which keeps its stdout:
    the group's kill cannot reach it, but the response still ends once
    nothing moved for --cgi-timeout."""
    pidfile = tmp_path / "daemon.pid"
    script(cgi_dir / "daemon.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello\\n'\n"
                                    f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' &\n")
    s = serve("--cgi", str(cgi_dir), "--cgi-timeout", "2")
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
            c.sendall(b"GET /daemon.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := c.recv(65536):  # a socket.timeout here: the response never ended
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b"hello" in data
        # Cut, not ended as if whole: no last chunk.
        assert not data.endswith(b"0\r\n\r\n"), data
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_a_broken_script_is_502_with_a_log_line(serve, cgi_dir):
    s = cgi_server(serve, cgi_dir)
    for name in ["noheader.cgi", "silent.cgi"]:
        assert requests.get(f"{s.url}/{name}", timeout=10).status_code == 502
        wait_for(lambda: f"{name}: no valid response head" in s.log(), what=f"{name}'s log line")
    # An NPH script's own chunks would reach the client chunked twice.
    script(cgi_dir / "nph-chunked.cgi",
           "#!/bin/sh\nprintf 'HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\n0\\r\\n\\r\\n'\n")
    assert requests.get(f"{s.url}/nph-chunked.cgi", timeout=10).status_code == 502
    wait_for(lambda: 'nph-chunked.cgi: no valid response head (Transfer-Encoding "chunked"' in s.log(),
             what="the NPH chunked body's log line")
    script(cgi_dir / "nointerp.cgi", "#!/no/such/interpreter\n")
    assert requests.get(f"{s.url}/nointerp.cgi", timeout=10).status_code == 502
    wait_for(lambda: "nointerp.cgi: cannot run it" in s.log(), what="the exec failure's log line")


def worker_descendants(s):
    """Every process below the master's workers."""
    out = []
    todo = list(s.worker_pids())
    while todo:
        pid = todo.pop()
        try:
            kids = [int(k) for t in os.listdir(f"/proc/{pid}/task")
                    for k in open(f"/proc/{pid}/task/{t}/children").read().split()]
        # A process that ends while its files are read gives either error.
        except (FileNotFoundError, ProcessLookupError):
            continue
        out += kids
        todo += kids
    return out


def test_a_script_over_the_timeout_is_killed_with_its_group(serve, cgi_dir, tmp_path):
    marker = tmp_path / "child.pid"
    # The script starts a child of its own, which would outlive it.
    script(cgi_dir / "hang.cgi", f"""#!/bin/sh
sleep 300 &
echo $! > {marker}
sleep 300
""")
    s = serve("--cgi", str(cgi_dir), "--cgi-timeout", "2", "--processes", "1")
    other = {}

    def meanwhile():
        wait_for(marker.exists, what="the script to start")
        other["r"] = requests.get(f"{s.url}/echo.sh", timeout=10)

    t = threading.Thread(target=meanwhile)
    t.start()
    r = requests.get(f"{s.url}/hang.cgi", timeout=20)
    t.join()
    assert r.status_code == 504
    # Another request in the same worker was served meanwhile.
    assert other["r"].status_code == 200
    child = int(marker.read_text())
    wait_for(lambda: not alive(child) and not worker_descendants(s), what="the group to die")
    assert "hang.cgi: no response, and idle for --cgi-timeout 2s" in s.log()


def test_a_script_cut_by_the_timeout_mid_response_is_logged_once_as_such(serve, cgi_dir):
    """The script's group killed for the timeout: one line says so. A
    second one blamed "a process outside the script's group" (meant for a
    daemon in a session of its own), seen before the killed pipe closed."""
    script(cgi_dir / "hangbody.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\npartial\\n'\nsleep 30\n")
    s = serve("--cgi", str(cgi_dir), "--cgi-timeout", "2", "--processes", "1")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{s.url}/hangbody.cgi", timeout=20).content
    s.wait_log("killing its process group")
    time.sleep(0.5)
    assert "outside the script's group" not in s.log()


@pytest.mark.parametrize("how", ["reload", "stop"])
def test_scripts_still_running_when_a_worker_leaves_are_killed_not_orphaned(serve, cgi_dir, tmp_path, how):
    """A reload or stop whose mercy runs out with scripts still running:
    the worker kills their groups before it goes. They were left running
    with no parent to reap or time them out, once per reload."""
    pids = tmp_path / "pids"
    pids.mkdir()
    script(cgi_dir / "stuck.cgi", f"""#!/bin/sh
sleep 300 &
echo $! > {pids}/child-$$
echo $$ > {pids}/script-$$
sleep 300
""")
    s = serve("--cgi", str(cgi_dir), "--cgi-timeout", "120", "--processes", "1",
              "--worker-reload-mercy", "2", "--reload-mercy", "2")
    s.wait_workers(1)
    clients = [threading.Thread(target=lambda: requests.get(f"{s.url}/stuck.cgi", timeout=30)) for _ in range(2)]
    for c in clients:
        c.start()
    wait_for(lambda: len(list(pids.iterdir())) == 4, what="both scripts and their children")
    started = [int(p.read_text()) for p in pids.iterdir()]
    os.kill(s.proc.pid, signal.SIGHUP if how == "reload" else signal.SIGTERM)
    wait_for(lambda: not any(alive(p) for p in started), timeout=30, what="the scripts and their children gone",
             show=s.log)
    for c in clients:
        c.join(30)


def test_the_timeout_counts_from_the_last_progress_not_the_start(serve, cgi_dir):
    """--cgi-timeout is how long a script may sit idle, as uWSGI's waits
    for output: an upload read, or output written, for longer than it in
    all runs to its end (git-http-backend's pushes and clones); a script
    that stops moving midway is cut."""
    script(cgi_dir / "ticks.cgi", """#!/bin/sh
printf 'Content-Type: text/plain\\n\\n'
for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done
""")
    script(cgi_dir / "swallow.cgi", """#!/bin/sh
n=$(wc -c)
printf 'Content-Type: text/plain\\n\\nread %s\\n' "$n"
""")
    script(cgi_dir / "stalls.cgi", """#!/bin/sh
printf 'Content-Type: text/plain\\n\\nfirst\\n'
sleep 300
""")
    # (--post-buffering at its least: the script starts once 64 KiB came.)
    s = serve("--cgi", str(cgi_dir), "--cgi-timeout", "2", "--processes", "1", "--post-buffering", "65536")
    r = requests.get(f"{s.url}/ticks.cgi", timeout=20)  # 3 s of output
    assert r.status_code == 200 and r.text.split("\n")[-2] == "tick 6"

    import http.client
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20)
    c.putrequest("POST", "/swallow.cgi")
    c.putheader("Content-Length", str(70_000 + 8 * 1000))
    c.endheaders()
    c.send(b"x" * 70_000)  # the script starts...
    for _ in range(8):  # ...and takes the rest over 3.2 s
        time.sleep(0.4)
        c.send(b"x" * 1000)
    r = c.getresponse()
    assert (r.status, r.read().strip()) == (200, b"read 78000")
    c.close()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{s.url}/stalls.cgi", timeout=20).content
    wait_for(lambda: "stalls.cgi: no input taken nor output given for --cgi-timeout 2s" in s.log(),
             what="the log line")


@pytest.mark.parametrize("how", ["stalls", "leaves"])
def test_an_upload_that_breaks_off_never_reaches_the_script_as_whole(serve, cgi_dir, tmp_path, how):
    """A client that declares 300 KB, sends 200 KB, then stalls (or
    half-closes): the script is stopped before its stdin closes, and the
    client gets the 408 (or 400), as from Apache. It read the end of the
    cut upload as the end of the whole: it saved the part, and the client
    got its 200."""
    saved = tmp_path / "saved"
    script(cgi_dir / "save.cgi", f"""#!/bin/sh
n=$(wc -c)
echo "$n" > {saved}
printf 'Content-Type: text/plain\\n\\nsaved %s\\n' "$n"
""")
    s = serve("--cgi", str(cgi_dir), "--processes", "1", "--post-buffering", "65536", "--socket-timeout", "2")
    c = socket.create_connection(("127.0.0.1", s.port), timeout=20)
    c.sendall(b"POST /save.cgi HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + b"x" * 200_000)
    if how == "leaves":
        c.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := c.recv(65536):
        answer += chunk
    c.close()
    want = b"HTTP/1.1 408 " if how == "stalls" else b"HTTP/1.1 400 "
    assert answer.startswith(want), answer[:200]
    s.wait_log("save.cgi: the request body broke off")
    # Killed before the answer went: it never runs on to save the part.
    assert not saved.exists(), saved.read_text()


def test_a_script_that_answers_without_reading_a_large_upload_and_runs_on_is_heard(serve, cgi_dir, tmp_path):
    """It writes its answer, leaves 3 MB of upload unread, and sleeps: at
    --cgi-timeout it is killed and what it wrote goes out (cut short at
    the end), as a small upload's answer does, and as Apache answers. It
    was a 504 "no response"."""
    script(cgi_dir / "noread.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nnoread\\n'\nsleep 30\n")
    (tmp_path / "up").write_bytes(bytes(3_000_000))
    s = serve("--cgi", str(cgi_dir), "--processes", "1", "--cgi-timeout", "2")
    r = subprocess.run(["curl", "-s", "-H", "Expect:", "--data-binary", f"@{tmp_path / 'up'}", "-w", "\n%{http_code}",
                        f"{s.url}/noread.cgi"], capture_output=True, text=True, timeout=30)
    assert r.stdout.split("\n")[0] == "noread" and r.stdout.endswith("\n200"), (r.returncode, r.stdout)
    assert "answered 504" not in s.log()


def test_a_worker_out_of_descriptors_answers_503_for_a_script(serve, cgi_dir):
    """EMFILE while starting a script is the server's trouble, for a
    moment: a 503 with Retry-After and a log line at most once a minute,
    as for a static file (docs/static-files.md). It was a 502 and a log
    line per request."""
    import resource
    s = cgi_server(serve, cgi_dir, "--processes", "1")
    (worker,) = s.wait_workers(1)
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(b"GET /echo.sh HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while not first.endswith(b"\r\n0\r\n\r\n"):
        first += c.recv(4096)
    assert first.startswith(b"HTTP/1.1 200 ")
    # Room for the script's file to be opened (and closed), none for its
    # three pipes.
    in_use = {int(fd) for fd in os.listdir(f"/proc/{worker}/fd")}
    lowest_free = min(set(range(max(in_use) + 2)) - in_use)
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (lowest_free + 2, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    for last in (False, True):
        c.sendall(b"GET /echo.sh HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if last else b"") + b"\r\n")
        head = c.recv(4096)
        assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head.lower(), head
    c.close()
    wait_for(lambda: "echo.sh: cannot run it: Too many open files" in s.log(), what="the log line")
    assert s.log().count("cannot run it") == 1


@pytest.mark.parametrize("http", ["--http1.1", "--http2-prior-knowledge"])
def test_a_content_length_the_script_breaks_is_held_as_nginx_holds_it(serve, cgi_dir, http):
    """`Content-Length: 1` then `hello`: the body is cut at its length, as
    nginx cuts what an upstream sends past it (over HTTP/2 the stream was
    reset, and curl got no page). A length past 2^64 is no length: the
    body goes as the script wrote it (it was an empty reply over HTTP/1.1,
    a reset over HTTP/2)."""
    script(cgi_dir / "long.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 1\\n\\nhello'\n")
    script(cgi_dir / "huge.cgi",
           "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 99999999999999999999999\\n\\nhi'\n")
    s = cgi_server(serve, cgi_dir)
    for path, body in [("/long.cgi", "h"), ("/huge.cgi", "hi")]:
        r = subprocess.run(["curl", "-s", http, "-w", "|%{http_code}", f"{s.url}{path}"], capture_output=True,
                           text=True, timeout=20)
        assert (r.returncode, r.stdout) == (0, f"{body}|200"), (path, r.returncode, r.stdout)
    s.wait_log("a CGI script sent more than its Content-Length: the rest is dropped")


def test_server_addr_is_the_address_reached_on_a_socket_of_every_address(serve, cgi_dir):
    """Listening on every address (`--http :8080`, as the docs' examples
    do): SERVER_ADDR is the one the client reached, as nginx and Apache
    give it; it was 0.0.0.0."""
    s = serve("--http-socket", ":{port}", "--cgi", str(cgi_dir), socket_arg=False)
    f = fields(requests.get(f"http://127.0.0.1:{s.port}/env.cgi", timeout=10).text)
    assert (f["SERVER_ADDR"], f["SERVER_PORT"]) == ("127.0.0.1", str(s.port)), f


def test_a_client_that_leaves_takes_the_script_with_it(serve, cgi_dir, tmp_path):
    marker = tmp_path / "forever.pid"
    script(cgi_dir / "forever.cgi", f"""#!/bin/sh
echo $$ > {marker}
printf 'Content-Type: text/plain\\n\\n'
while :; do echo tick; sleep 0.05; done
""")
    s = serve("--cgi", str(cgi_dir), "--cgi-timeout", "300", "--processes", "1")
    with requests.get(f"{s.url}/forever.cgi", stream=True, timeout=20) as r:
        assert next(r.iter_content(chunk_size=None)).startswith(b"tick")
    pid = int(marker.read_text())
    wait_for(lambda: process_state(pid) is None and not worker_descendants(s), what="the script to be killed and reaped")


def test_no_zombies_after_many_scripts(serve, cgi_dir):
    s = serve("--cgi", str(cgi_dir), "--processes", "1")
    for name in ["echo.sh", "silent.cgi", "noheader.cgi", "status.cgi", "local.cgi"] * 6:
        requests.get(f"{s.url}/{name}", timeout=10)
    wait_for(lambda: not worker_descendants(s), what="every script reaped")


def test_php_through_its_helper(serve, tmp_path):
    php_cgi = shutil.which("php-cgi")
    if not php_cgi:
        pytest.skip("php-cgi is not installed (scripts/test.sh installs it)")
    d = tmp_path / "php"
    d.mkdir()
    (d / "info.php").write_text("<?php phpinfo(INFO_VARIABLES);")
    (d / "form.php").write_text(
        "<?php header('X-Php: yes'); echo json_encode(['get' => $_GET, 'post' => $_POST,"
        " 'file' => isset($_FILES['f']) ? [$_FILES['f']['name'], sha1_file($_FILES['f']['tmp_name'])] : null,"
        " 'script' => $_SERVER['SCRIPT_NAME'], 'info' => $_SERVER['PATH_INFO'] ?? null]);")
    s = serve("--cgi", f"/php={d}", "--cgi-helper", ".php=php-cgi", "--cgi-allowed-ext", ".php")
    r = requests.get(f"{s.url}/php/info.php", timeout=20)
    assert r.status_code == 200 and "PHP Variables" in r.text
    r = requests.get(f"{s.url}/php/form.php/tail?a=1&b[]=2", timeout=20)
    assert r.headers["X-Php"] == "yes"
    assert r.json() == {"get": {"a": "1", "b": ["2"]}, "post": [], "file": None,
                        "script": "/php/form.php", "info": "/tail"}
    data = os.urandom(50_000)
    r = requests.post(f"{s.url}/php/form.php", data={"x": "y"}, files={"f": ("up.bin", data)}, timeout=20)
    assert r.json()["post"] == {"x": "y"}
    assert r.json()["file"] == ["up.bin", hashlib.sha1(data).hexdigest()]


NGINX_FCGI = """
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:{port}; root {root};
    location /oxgate/ {{ rewrite ^/oxgate(/.*)$ $1 break; fastcgi_pass unix:{sock};
      include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; }}
    location /fcgiwrap/ {{ rewrite ^/fcgiwrap(/.*)$ $1 break; fastcgi_pass unix:{wrap};
      include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; }}
  }}
}}
"""


def test_nginx_fastcgi_pass_as_for_fcgiwrap(serve, cgi_dir, tmp_path):
    """nginx's fcgiwrap set-up, pointed at oxgate, runs the same scripts as
    the real fcgiwrap does behind the same nginx."""
    fcgiwrap = shutil.which("fcgiwrap") or "/usr/sbin/fcgiwrap"
    if not os.path.exists(fcgiwrap):
        pytest.skip("fcgiwrap is not installed (scripts/test.sh installs it)")
    sock = tmp_path / "oxgate.sock"
    wrap = tmp_path / "fcgiwrap.sock"
    serve("--fastcgi-socket", str(sock), "--cgi", str(cgi_dir), socket_arg=False, wait=False)
    wrapper = subprocess.Popen([fcgiwrap, "-s", f"unix:{wrap}"], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sock.exists() and wrap.exists(), what="both FastCGI sockets")
        port = free_port()
        d = tmp_path / "nginx"
        nginx = start_nginx(d, port, NGINX_FCGI.format(d=d, port=port, root=cgi_dir, sock=sock, wrap=wrap))
        try:
            body = os.urandom(300_000)
            for method, path, data in [("GET", "/echo.sh?a=1", None), ("GET", "/echo.pl?x=%20y", None),
                                       ("POST", "/echo.sh", body), ("POST", "/echo.pl", body),
                                       ("GET", "/status.cgi", None), ("GET", "/away.cgi", None),
                                       # A local redirect goes back to the client, through
                                       # nginx's access rules again.
                                       ("GET", "/local.cgi", None)]:
                answers = []
                for via in ["oxgate", "fcgiwrap"]:
                    r = requests.request(method, f"http://127.0.0.1:{port}/{via}{path}", data=data,
                                         allow_redirects=False, timeout=20)
                    answers.append((r.status_code, r.headers.get("Content-Type"), r.headers.get("Location"),
                                    r.text.replace(f"/{via}", "")))
                assert answers[0] == answers[1], (path, answers)
                assert answers[0][0] in (200, 302, 418)
            r = requests.get(f"http://127.0.0.1:{port}/oxgate/echo.sh?a=1", timeout=20)
            assert fields(r.text)["QUERY_STRING"] == "a=1"
        finally:
            nginx.terminate()
            nginx.wait(10)
    finally:
        wrapper.send_signal(signal.SIGTERM)
        wrapper.wait(10)


@pytest.mark.parametrize("modifier1", [9, 0])
def test_nginx_uwsgi_pass_with_uwsgi_cgi_plugins_modifier1_9(serve, cgi_dir, tmp_path, modifier1):
    """nginx set up for uWSGI's CGI plugin sends modifier1 9 (its only
    one): the scripts are served, where it was a 502 ("modifier1 9
    refused")."""
    sock = tmp_path / "cgi.sock"
    s = serve("--socket", str(sock), "--chmod-socket", "666", "--cgi", f"/cgi-bin={cgi_dir}")
    wait_for(lambda: sock.exists(), what="the socket")
    location = (f"location /cgi-bin/ {{ include /etc/nginx/uwsgi_params; uwsgi_modifier1 {modifier1};"
                f" uwsgi_pass unix:{sock}; }}")
    with nginx_serving(tmp_path, location) as port:
        r = requests.get(f"http://127.0.0.1:{port}/cgi-bin/echo.sh/x?q=1", timeout=10)
    assert r.status_code == 200, (r.status_code, s.log())
    assert fields(r.text)["SCRIPT_NAME"] == "/cgi-bin/echo.sh" and fields(r.text)["PATH_INFO"] == "/x"


def test_bad_cgi_options_are_clear_errors(tmp_path):
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--cgi", str(tmp_path / "nowhere"))
    assert code != 0 and "--cgi" in err and "nowhere" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--cgi", str(tmp_path), "--cgi-helper", ".py")
    assert code == 2 and "expected EXT=COMMAND" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--cgi", str(tmp_path), "--cgi-helper", ".x=no-such-prog")
    assert code != 0 and "no program" in err


def test_a_script_starts_with_the_default_signal_dispositions(serve, cgi_dir):
    """The worker does not let its own signal set-up leak into scripts: an
    ignored SIGHUP, SIGINT or SIGQUIT would stay ignored across exec."""
    # Read with the shell's builtins: a grep forked from the shell could read
    # the mask dash blocks, for a moment, around each fork it makes.
    script(cgi_dir / "signals.cgi", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n"
                                    "while IFS= read -r line; do case \"$line\" in SigIgn:*|SigBlk:*) "
                                    "printf '%s\\n' \"$line\";; esac; done < /proc/$$/status\n")
    s = cgi_server(serve, cgi_dir)
    masks = {k: int(v, 16) for k, v in (line.split(":\t") for line in
                                        requests.get(f"{s.url}/signals.cgi", timeout=10).text.splitlines())}
    # SIGTSTP too, which the master ignores (it stayed ignored in scripts).
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGPIPE, signal.SIGTSTP):
        bit = 1 << (sig - 1)
        assert not masks["SigIgn"] & bit and not masks["SigBlk"] & bit, (sig, masks)


@pytest.mark.parametrize("how", ["head", "204", "local-redirect"])
def test_a_script_whose_body_is_not_sent_runs_to_its_end(serve, cgi_dir, tmp_path, how):
    """A HEAD, a 204 (a beacon that answers first and works after) or a
    local redirect sends no body: the rest of the output is read and let
    go, and the script finishes its work, as under Apache; it was killed."""
    done = tmp_path / "done"
    status = {"head": "", "204": "Status: 204 No Content\\n",
              "local-redirect": "Location: /echo.sh\\n"}[how]
    script(cgi_dir / "work.cgi", f"#!/bin/sh\nprintf '{status}Content-Type: text/plain\\n\\nanswered\\n'\n"
                                 f"sleep 0.5\nhead -c 200000 /dev/zero\ntouch {done}\n")
    s = cgi_server(serve, cgi_dir)
    r = requests.request("HEAD" if how == "head" else "GET", f"{s.url}/work.cgi", timeout=10)
    assert r.status_code == {"head": 200, "204": 204, "local-redirect": 200}[how]
    wait_for(done.exists, timeout=10, what="the script to finish its work")


def test_a_script_reached_through_a_link_runs_by_the_links_name(serve, cgi_dir):
    """As Apache runs it: a multi-call script reads which name it was run
    by ($0, SCRIPT_FILENAME), and an `nph-` link is an NPH script."""
    script(cgi_dir / "whoami.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n%s %s\\n' "
                                  "\"$(basename \"$0\")\" \"$(basename \"$SCRIPT_FILENAME\")\"\n")
    (cgi_dir / "other-name.cgi").symlink_to("whoami.sh")
    s = cgi_server(serve, cgi_dir)
    assert requests.get(f"{s.url}/other-name.cgi", timeout=10).text == "other-name.cgi other-name.cgi\n"
    assert requests.get(f"{s.url}/whoami.sh", timeout=10).text == "whoami.sh whoami.sh\n"


NGINX_GIT = """
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:{port};
    location ~ /git(/.*) {{ include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME {backend}; fastcgi_param GIT_PROJECT_ROOT {repos};
      fastcgi_param GIT_HTTP_EXPORT_ALL ""; fastcgi_param PATH_INFO $1; fastcgi_pass unix:{sock}; }}
  }}
}}
"""


def test_git_clones_through_nginxs_git_http_backend_site(serve, tmp_path):
    """git-http-backend's usual nginx site (fastcgi_params, whose SCRIPT_NAME
    is the whole path, then a PATH_INFO of its own), pointed at oxgate as at
    fcgiwrap: a clone works. The two were joined into a doubled path
    (`/repo.git/info/refs/repo.git/info/refs`), and git found no repository."""
    backend = "/usr/lib/git-core/git-http-backend"
    if not (shutil.which("git") and os.path.exists(backend)):
        pytest.skip("git is not installed")
    repos = tmp_path / "repos"
    work = tmp_path / "work"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    (work / "README").write_text("hello from oxgate\n")
    subprocess.run([*git, "-C", str(work), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "first"], check=True)
    subprocess.run([*git, "clone", "-q", "--bare", str(work), str(repos / "repo.git")], check=True)
    sock = tmp_path / "oxgate.sock"
    serve("--fastcgi-socket", str(sock), "--cgi", f"/git={backend}", socket_arg=False, wait=False)
    wait_for(sock.exists, what="oxgate's FastCGI socket")
    port = free_port()
    d = tmp_path / "nginx"
    nginx = start_nginx(d, port, NGINX_GIT.format(d=d, port=port, backend=backend, repos=repos, sock=sock))
    try:
        p = subprocess.run([*git, "clone", "-q", f"http://127.0.0.1:{port}/git/repo.git", str(tmp_path / "clone")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "clone" / "README").read_text() == "hello from oxgate\n"
    finally:
        nginx.terminate()
        nginx.wait(10)
