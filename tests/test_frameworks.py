"""Real apps from PyPI, run from the test virtualenv."""
import requests

from helpers import APPS, VENV


def test_flask(serve):
    s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", "flask_app:app")
    assert requests.get(s.url + "/").text == "Hello from Flask"
    r = requests.post(s.url + "/json?a=1", json={"k": [1, 2]})
    assert r.json() == {"received": {"k": [1, 2]}, "args": {"a": "1"}}
    r = requests.post(s.url + "/form", data={"field": "v"}, files={"upload": ("f.bin", b"\x00" * 100000)})
    assert r.json() == {"field": "v", "filename": "f.bin", "size": 100000}
    r = requests.get(s.url + "/stream")
    assert r.text == "0\n1\n2\n3\n4\n"
    assert requests.get(s.url + "/fail").status_code == 500
    assert "flask view failed" in s.log()
    assert requests.get(s.url + "/missing").status_code == 404


def test_django(serve):
    s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", "djproj.wsgi")
    assert requests.get(s.url + "/").text == "Hello from Django"
    r = requests.post(s.url + "/echo/?q=1", data=b"payload", headers={"User-Agent": "t/1"})
    assert r.json() == {"method": "POST", "body": "payload", "path": "/echo/", "q": {"q": "1"}, "ua": "t/1"}
    assert requests.get(s.url + "/stream/").text == "line 0\nline 1\nline 2\n"


def test_httpbin(serve):
    s = serve("--home", str(VENV), "--module", "httpbin:app", "--threads", "4")
    r = requests.get(s.url + "/get?x=1", headers={"X-Test": "yes"})
    assert r.json()["args"] == {"x": "1"} and r.json()["headers"]["X-Test"] == "yes"
    r = requests.post(s.url + "/post", data={"a": "b"})
    assert r.json()["form"] == {"a": "b"}
    r = requests.get(s.url + "/status/418")
    assert r.status_code == 418
    r = requests.get(s.url + "/stream/5")
    assert len(r.text.strip().splitlines()) == 5
    r = requests.get(s.url + "/bytes/100000?seed=1")
    assert len(r.content) == 100000
    r = requests.get(s.url + "/gzip")
    assert r.json()["gzipped"] is True
    r = requests.get(s.url + "/redirect/2")
    assert r.status_code == 200 and len(r.history) == 2
