"""Apache httpd (mod_proxy_uwsgi, mod_proxy_fcgi, mod_proxy_scgi) and lighttpd
(mod_scgi in uwsgi mode, mod_scgi, mod_fastcgi) in front of oxgate: the echo
app must see the same request through every path (test-peers.md §1.2-1.3)."""
import os
import shutil
import socket
import subprocess
import time

import pytest
from conftest import APPS, free_port
from test_gateway import same_answers

ECHO = str(APPS / "echo.py")
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
MODULES = "/usr/lib/apache2/modules"


@pytest.fixture
def upstream(serve, tmp_path):
    s = serve("--wsgi-file", ECHO, "--processes", "2", "--socket", f"127.0.0.1:{free_port()}",
              "--socket", str(tmp_path / "ox.sock"), "--scgi-socket", f"127.0.0.1:{free_port()}",
              "--fastcgi-socket", f"127.0.0.1:{free_port()}", "--chmod-socket", "666")
    ports = [a.split(":")[1] for a in s.args if a.startswith("127.0.0.1:")]
    s.uwsgi, s.scgi, s.fcgi = ports[1], ports[2], ports[3]
    s.sock = tmp_path / "ox.sock"
    return s


def start(cmd, port):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[0]} exited: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    raise AssertionError(f"{cmd[0]} did not start")


@pytest.fixture
def apache(upstream, tmp_path):
    if not os.path.exists(f"{MODULES}/mod_proxy_uwsgi.so"):
        pytest.skip("apache2-bin is not installed")
    d, port = tmp_path / "apache", free_port()
    (d / "logs").mkdir(parents=True)
    mods = ["mpm_event", "authz_core", "proxy", "proxy_uwsgi", "proxy_fcgi", "proxy_scgi"]
    (d / "httpd.conf").write_text(f"""
ServerRoot "{d}"
PidFile logs/httpd.pid
Listen 127.0.0.1:{port}
ServerName localhost
ErrorLog logs/error.log
LogLevel warn
{"".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so{chr(10)}" for m in mods)}
ProxyPass /u/ uwsgi://127.0.0.1:{upstream.uwsgi}/
ProxyPass /ux/ unix:{upstream.sock}|uwsgi://localhost/
ProxyPass /f/ fcgi://127.0.0.1:{upstream.fcgi}/ enablereuse=on
ProxyPass /s/ scgi://127.0.0.1:{upstream.scgi}/
""")
    proc = start([APACHE, "-f", str(d / "httpd.conf"), "-DFOREGROUND"], port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def lighttpd(upstream, tmp_path):
    if not os.path.exists(LIGHTTPD):
        pytest.skip("lighttpd is not installed")
    d, port = tmp_path / "lighttpd", free_port()
    d.mkdir()
    (d / "lighttpd.conf").write_text(f"""
server.document-root = "{d}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{d}/error.log"
server.upload-dirs = ( "{d}" )
server.stream-request-body = 1
server.modules = ( "mod_fastcgi", "mod_scgi" )
$HTTP["url"] =~ "^/u/" {{ scgi.protocol = "uwsgi"
  scgi.server = ( "/u/" => (( "host" => "127.0.0.1", "port" => {upstream.uwsgi}, "check-local" => "disable" )) ) }}
$HTTP["url"] =~ "^/s/" {{
  scgi.server = ( "/s/" => (( "host" => "127.0.0.1", "port" => {upstream.scgi}, "check-local" => "disable" )) ) }}
$HTTP["url"] =~ "^/f/" {{
  fastcgi.server = ( "/f/" => (( "host" => "127.0.0.1", "port" => {upstream.fcgi}, "check-local" => "disable" )) ) }}
""")
    proc = start([LIGHTTPD, "-D", "-f", str(d / "lighttpd.conf")], port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("front", ["/u", "/ux", "/f", "/s"])
def test_same_answers_through_apache(apache, front):
    same_answers(apache, front, split=True)


@pytest.mark.parametrize("front", ["/u", "/f", "/s"])
def test_same_answers_through_lighttpd(lighttpd, front):
    same_answers(lighttpd, front, split=True)
