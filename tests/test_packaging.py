"""packaging/ (issue #19): the systemd units pass `systemd-analyze verify`,
socket activation serves on the socket systemd holds (with the protocol
the ini names for it), the example ini runs, and the logrotate snippet
parses."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess

import pytest

import requests

from helpers import APPS, BIN, ROOT, VENV, cgi, free_port, fresh, listens, start_nginx, uwsgi_request, wait_for

PACKAGING = ROOT / "packaging"


def local_copy(tmp_path, name):
    """The unit with its paths pointed at this checkout."""
    text = (PACKAGING / name).read_text()
    text = text.replace("/usr/local/bin/oxgate", str(BIN)).replace("WorkingDirectory=/srv/app",
                                                                    f"WorkingDirectory={tmp_path}")
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_units_pass_systemd_analyze_verify(tmp_path):
    units = [local_copy(tmp_path, "oxgate.service"), local_copy(tmp_path, "oxgate.socket")]
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                       capture_output=True, text=True, timeout=60)
    # Unknown settings are only warned about: the output must be empty too.
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    service = (PACKAGING / "oxgate.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM"):
        assert line in service


def ini_for(tmp_path, **changes):
    """packaging/app.ini, made to run here."""
    lines = []
    for line in (PACKAGING / "app.ini").read_text().splitlines():
        key = line.split("=")[0].strip()
        if key not in changes:
            lines.append(line)
    lines += [f"{k} = {v}" for k, v in changes.items() if v is not None]
    ini = tmp_path / "app.ini"
    ini.write_text("\n".join(lines) + "\n")
    return ini


def paths_here(tmp_path, port_key, port):
    return ini_for(tmp_path, **{
        "http-socket": None, port_key: f"127.0.0.1:{port}", "chdir": str(APPS), "module": "echo:application",
        "home": None, "processes": "2", "logto": str(tmp_path / "app.log"),
        "stats": str(tmp_path / "stats.sock")})


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")
@pytest.mark.parametrize("protocol", ["http-socket", "uwsgi-socket"])
def test_socket_activation_serves_the_protocol_the_ini_names(tmp_path, protocol):
    port = free_port()
    ini = paths_here(tmp_path, protocol, port)
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", str(BIN), "--ini", str(ini)],
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        # systemd-socket-activate binds the socket (the probe's connection
        # starts oxgate, which serves it like any other).
        wait_for(lambda: listens(port), what="the activation socket")
        if protocol == "http-socket":
            r = fresh(f"http://127.0.0.1:{port}/hello?x=1")
            assert r.status_code == 200 and r.json()["query"] == "x=1"
        else:
            # systemd holds the socket: the first connection starts oxgate.
            reply = uwsgi_request(port, cgi(path="/hello", query="x=1"), timeout=30)
            assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        wait_for(lambda: (tmp_path / "app.log").exists() and "GET /hello" in (tmp_path / "app.log").read_text(),
                 what="the request in the ini's logto")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)



@pytest.mark.skipif(shutil.which("logrotate") is None, reason="needs logrotate")
def test_logrotate_snippet_parses(tmp_path):
    r = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(PACKAGING / "oxgate.logrotate")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "error" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def test_shell_completions_come_from_the_option_table(tmp_path):
    script = PACKAGING / "completions" / "oxgate.bash"

    def complete(*words):
        line = " ".join(shlex.quote(w) for w in ("oxgate",) + words)
        cmd = (f"source {shlex.quote(str(script))}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; "
               '_oxgate; printf "%s\\n" "${COMPREPLY[@]}"')
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout.split()
    assert complete("--http-so") == ["--http-socket"]
    assert complete("--interface", "") == ["auto", "wsgi", "asgi", "asgi2"]
    assert complete("--loop", "uv") == ["uvloop"]
    (tmp_path / "sub").mkdir()
    assert complete("--chdir", str(tmp_path / "s")) == [str(tmp_path / "sub")]
    # What the binary prints is what packaging/ ships, for every shell.
    for shell, name in (("bash", "oxgate.bash"), ("zsh", "_oxgate"), ("fish", "oxgate.fish")):
        printed = subprocess.run([BIN, "--completions", shell], capture_output=True, text=True, check=True).stdout
        assert printed == (PACKAGING / "completions" / name).read_text(), shell
    bad = subprocess.run([BIN, "--completions", "tcsh"], capture_output=True, text=True)
    assert bad.returncode != 0 and "bash, zsh, fish" in bad.stderr


# packaging/sites/: each web server's site file, run by the real server with
# only its paths and port changed, in front of oxgate's uwsgi unix socket.
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"


def site_here(name, tmp_path, port, sock, static):
    text = (PACKAGING / "sites" / name).read_text()
    return (text.replace("/run/oxgate/app.sock", str(sock)).replace("/srv/app/static/", f"{static}/")
            .replace("listen 80;", f"listen 127.0.0.1:{port};").replace("*:80", f"127.0.0.1:{port}"))


def nginx_main(d, port, site):
    shutil.copy("/etc/nginx/uwsgi_params", d / "uwsgi_params")
    (d / "site.conf").write_text(site)
    return f"""
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; uwsgi_temp_path {d}/tmp; client_body_temp_path {d}/tmp; include {d}/site.conf; }}
"""


def start_front(cmd, port):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: proc.poll() is not None or listens(port), what=f"{cmd[0]} listening")
    assert proc.poll() is None, proc.stderr.read().decode()
    return proc


@pytest.mark.parametrize("server", ["nginx", "apache", "lighttpd"])
def test_site_files_serve_the_app_and_static_files(serve, tmp_path, server):
    if server == "apache" and not os.path.exists(f"{APACHE_MODULES}/mod_proxy_uwsgi.so"):
        pytest.skip("apache2-bin is not installed")
    if server == "lighttpd" and not os.path.exists(LIGHTTPD):
        pytest.skip("lighttpd is not installed")
    sock = tmp_path / "app.sock"
    static = tmp_path / "static"
    static.mkdir()
    (static / "site.css").write_text("body { color: teal }\n")
    serve("--uwsgi-socket", str(sock), "--chmod-socket", "666", "--wsgi-file", str(APPS / "echo.py"),
          socket_arg=False, wait=False)
    wait_for(lambda: sock.exists(), what="the uwsgi socket")
    port = free_port()
    d = tmp_path / server
    d.mkdir()
    if server == "nginx":
        proc = start_nginx(d, port, nginx_main(d, port, site_here("nginx.conf", tmp_path, port, sock, static)))
    elif server == "apache":
        (d / "logs").mkdir()
        mods = ["mpm_event", "authz_core", "alias", "proxy", "proxy_uwsgi"]
        (d / "site.conf").write_text(site_here("apache.conf", tmp_path, port, sock, static))
        (d / "httpd.conf").write_text(
            f'ServerRoot "{d}"\nPidFile logs/httpd.pid\nListen 127.0.0.1:{port}\nServerName localhost\n'
            f"ErrorLog logs/error.log\nLogLevel warn\n"
            + "".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n" for m in mods)
            + f"Include {d}/site.conf\n")
        proc = start_front([APACHE, "-f", str(d / "httpd.conf"), "-DFOREGROUND"], port)
    else:
        (d / "logs").mkdir()
        (d / "tmp").mkdir()
        (d / "site.conf").write_text(site_here("lighttpd.conf", tmp_path, port, sock, static))
        (d / "lighttpd.conf").write_text(
            f'server.document-root = "{d}"\nserver.bind = "127.0.0.1"\nserver.port = {port}\n'
            f'server.errorlog = "{d}/logs/error.log"\nserver.upload-dirs = ( "{d}/tmp" )\n'
            f'include "{d}/site.conf"\n')
        proc = start_front([LIGHTTPD, "-D", "-f", str(d / "lighttpd.conf")], port)
    try:
        r = requests.get(f"http://127.0.0.1:{port}/hello/world?x=1", timeout=10)
        assert r.status_code == 200, r.text
        seen = r.json()
        assert (seen["script_name"], seen["path"], seen["query"]) == ("", "/hello/world", "x=1")
        r = requests.get(f"http://127.0.0.1:{port}/static/site.css", timeout=10)
        assert (r.status_code, r.text) == (200, "body { color: teal }\n")
    finally:
        proc.terminate()
        proc.wait(10)


def test_dockerfile_passes_hadolint_and_its_command_serves(serve):
    dockerfile = PACKAGING / "Dockerfile"
    hadolint = VENV / "bin" / "hadolint"
    r = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    text = dockerfile.read_text().replace("\\\n", "")
    assert re.search(r"^USER [1-9]\d*$", text, re.M)  # not root, by number
    # The image's command, as a user would run it (docker cannot run here).
    cmd = json.loads(re.findall(r"^CMD (\[.*\])$", text, re.M)[-1])
    assert cmd[0] == "oxgate"
    args = [a.replace("0.0.0.0:8000", "127.0.0.1:{port}") for a in cmd[1:]]
    s = serve(*args, socket_arg=False, cwd=ROOT / "examples")
    wait_for(lambda: requests.get(s.url + "/healthz").status_code == 200, what="the health check")
    assert requests.get(s.url + "/").text == "Hello, World!"


def test_kubernetes_manifests_validate_and_their_command_serves(serve, tmp_path):
    import yaml
    validate = str(VENV / "bin" / "kubernetes-validate")
    manifest = PACKAGING / "kubernetes" / "app.yaml"
    r = subprocess.run([validate, "--strict", str(manifest)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed for resource deployment/app" in r.stdout + r.stderr
    assert "passed for resource service/app" in r.stdout + r.stderr
    # The validator does catch a mistake.
    broken = tmp_path / "broken.yaml"
    broken.write_text(manifest.read_text().replace("readinessProbe:", "readynessProbe:"))
    assert subprocess.run([validate, "--strict", str(broken)], capture_output=True, timeout=120).returncode != 0

    deployment, service = yaml.safe_load_all(manifest.read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    opt = lambda name: args[args.index(name) + 1]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == opt("--health-path")
    assert opt("--http-socket").endswith(f":{ports['http']}") and opt("--metrics").endswith(f":{ports['metrics']}")
    assert pod["terminationGracePeriodSeconds"] > float(opt("--drain-delay")) + int(opt("--reload-mercy"))
    assert pod["securityContext"]["runAsUser"] == 10001  # packaging/Dockerfile's USER
    # PodMonitor is a CRD (Prometheus Operator): no schema here; it must
    # scrape the port the pod names.
    monitor = yaml.safe_load((PACKAGING / "kubernetes" / "podmonitor.yaml").read_text())
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]

    # The container's command serves, with this checkout's app and free ports.
    metrics = free_port()
    args = [a.replace("0.0.0.0:8000", "127.0.0.1:{port}").replace("0.0.0.0:9100", f"127.0.0.1:{metrics}")
            .replace("app:app", "echo:application") for a in args[1:]]
    s = serve(*args, "--chdir", str(APPS), socket_arg=False)
    wait_for(lambda: requests.get(s.url + "/healthz").status_code == 200, what="the readiness probe")
    wait_for(lambda: "oxgate_" in requests.get(f"http://127.0.0.1:{metrics}/metrics").text, what="the metrics")
