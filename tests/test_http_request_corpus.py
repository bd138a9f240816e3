"""Gunicorn's own request corpus (tests/requests/ of its sdist, which
scripts/test.sh downloads): every invalid request is refused and never
reaches the app; every valid one reaches it as Gunicorn parses it. Each is
sent whole, then in 1-byte, 7-byte and random pieces.

Gunicorn's settings that the corpus sets map onto oxgate's options of the
same name; the cases that need a setting oxgate does not have, and the few
where hyper (oxgate's HTTP parser) decides otherwise, are listed below
with the reason, and a test keeps that list exact."""
import os
import random
import socket
import sys
import time
import urllib.parse

import pytest

from conftest import Server
from helpers import APPS, ROOT

CORPUS = os.environ.get("OXGATE_GUNICORN_CORPUS", str(ROOT / "target" / "gunicorn-corpus"))
REQUESTS = os.path.join(CORPUS, "requests")
if not os.path.isdir(REQUESTS):
    raise RuntimeError(f"Gunicorn's request corpus is missing at {CORPUS}: scripts/test.sh downloads it")
# The corpus's own loader (treq.py: its .http escapes and its uri()), with
# the gunicorn package tests/requirements.txt installs.
sys.path.insert(0, CORPUS)
import treq  # noqa: E402

# Gunicorn settings with an oxgate option of the same name.
OPTIONS = {
    "limit_request_line": "--limit-request-line",
    "limit_request_fields": "--limit-request-fields",
    "limit_request_field_size": "--limit-request-field-size",
    "proxy_protocol": "--proxy-protocol",
}

# Cases left out, by name, with why.
NO_SUCH_SETTING = "needs a Gunicorn setting oxgate does not have"
LEFT_OUT = {
    # header_map=refuse: oxgate drops names with '_' (Gunicorn's default)
    "invalid/040": NO_SUCH_SETTING,
    "invalid/chunked_07": NO_SUCH_SETTING,
    "valid/040_compat": NO_SUCH_SETTING,
    # X-Forwarded-Ssl beside X-Forwarded-Proto: oxgate reads only the latter
    "invalid/019": NO_SUCH_SETTING,
    # permit_obsolete_folding, strip_header_spaces, and the method relaxations
    "valid/compat_obs_fold": NO_SUCH_SETTING,
    "valid/compat_obs_fold_huge": NO_SUCH_SETTING,
    "valid/028": NO_SUCH_SETTING,
    "valid/031compat": NO_SUCH_SETTING,
    "valid/031compat2": NO_SUCH_SETTING,
    # Gunicorn parses what arrived of a body cut short; oxgate waits for the
    # rest, then times out.
    "valid/099": "its body is shorter than its Content-Length",
    # hyper's chunk decoder allows a space after the size; the body is read
    # the same way with or without it.
    "invalid/chunked_09": "hyper allows whitespace after a chunk size",
    # Refused where Gunicorn serves: the safe side of each.
    "valid/014": "hyper (httparse) refuses '\"' in a target",
    "valid/rfc9112_target_authority_connect_01": "CONNECT is answered 405 (an app server has no tunnel)",
    "valid/rfc9112_target_authority_ipv6_01": "CONNECT is answered 405 (an app server has no tunnel)",
}
# Errors that say the request never finished (so nothing can answer it).
UNFINISHED = {"NoMoreData", "ChunkMissingTerminator"}


def case_names(kind):
    return sorted(f"{kind}/{f[:-5]}" for f in os.listdir(os.path.join(REQUESTS, kind)) if f.endswith(".http"))


def load(name):
    """The bytes to send, what Gunicorn expects, and its settings."""
    fname = os.path.join(REQUESTS, name + ".http")
    spec = treq.load_py(os.path.join(REQUESTS, name + ".py"))
    with open(os.path.join(REQUESTS, name + ".py")) as f:
        source = f.read()
    settings = {k: spec["cfg"].settings[k].get() for k in OPTIONS if f"'{k}'" in source or f'"{k}"' in source}
    if name.startswith("valid/"):
        return treq.request(fname, spec["request"]).data, spec["request"], settings
    return treq.badrequest(fname).data, spec["request"], settings


_servers = {}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """server(settings): one oxgate per distinct set of settings."""
    tmp = tmp_path_factory.mktemp("corpus")

    def get(settings):
        key = tuple(sorted(settings.items()))
        if key not in _servers:
            args = ["--http-socket", "127.0.0.1:{port}", "--wsgi-file", str(APPS / "request_echo.py"),
                    "--socket-timeout", "3"]
            for k, v in key:
                args.append(f"{OPTIONS[k]}={v}")
            _servers[key] = Server(tmp, args)
        return _servers[key]

    yield get
    for s in _servers.values():
        s.stop()
    _servers.clear()


def pieces(data, how):
    if how == "whole":
        return [data]
    if how == "random":
        rnd = random.Random(data)
        out, i = [], 0
        while i < len(data):
            n = rnd.randint(1, max(1, len(data) // 10))
            out.append(data[i:i + n])
            i += n
        return out
    n = int(how)
    return [data[i:i + n] for i in range(0, len(data), n)]


def connect(port, data, how):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for p in pieces(data, how):
            s.sendall(p)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the whole request was sent
    return s


def read_until_closed(s, within=10):
    """What the server sent until it closed (a reset too: closed with
    bytes unread), and whether it closed within `within` seconds."""
    out, deadline = b"", time.monotonic() + within
    try:
        while (chunk := s.recv(65536)) and time.monotonic() < deadline:
            out += chunk
    except ConnectionResetError:
        pass
    return out, time.monotonic() < deadline


def read_responses(s, count):
    """`count` responses (status, headers, body), parsed as they come."""
    f = s.makefile("rb")
    out = []
    for _ in range(count):
        status = f.readline()
        assert status.startswith(b"HTTP/1."), status
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, v = line.decode("latin-1").split(":", 1)
            headers[k.strip().lower()] = v.strip()
        body = f.read(int(headers.get("content-length", 0)))
        out.append((int(status.split()[1]), headers, body))
    return out


HOW = ["whole", "1", "7", "random"]


def environ_headers(expected):
    """The CGI variables of Gunicorn's expected headers, by oxgate's rules:
    repeated values joined by ", " (cookies by "; "), names with '_' dropped."""
    out = {}
    for name, value in expected:
        if "_" in name:
            continue
        key = name.replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        if key in out and key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            continue
        sep = "; " if key == "HTTP_COOKIE" else ", "
        out[key] = out[key] + sep + value if key in out else value
    return out


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", [n for n in case_names("valid") if n not in LEFT_OUT])
def test_valid_request_reaches_the_app_as_gunicorn_parses_it(servers, name, how):
    import json
    data, expected, settings = load(name)
    expected = expected if isinstance(expected, list) else [expected]
    srv = servers(settings)
    with connect(srv.port, data, how) as s:
        answers = read_responses(s, len(expected))
    for (status, _, body), exp in zip(answers, expected):
        assert status == 200, (name, body)
        got = json.loads(body)
        assert got["method"] == exp["method"]
        uri = exp["uri"]
        path = urllib.parse.unquote_to_bytes(uri["path"].encode("latin-1")).decode("latin-1")
        assert got["path"] == path
        assert got["query"] == uri["query"]
        assert got["protocol"] == "HTTP/%d.%d" % exp["version"]
        assert got["headers"] == environ_headers(exp["headers"])
        body = exp["body"]
        assert got["body"].encode("latin-1") == (body.encode("latin-1") if isinstance(body, str) else body)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", [n for n in case_names("invalid") if n not in LEFT_OUT])
def test_invalid_request_is_refused(servers, name, how):
    data, error, settings = load(name)
    srv = servers(settings)
    unfinished = error.__name__ in UNFINISHED
    with connect(srv.port, data, how) as s:
        if unfinished:
            # Nothing more is coming: the server must close without serving.
            s.shutdown(socket.SHUT_WR)
        # Read to the end: the server closes (a hang fails on the timeout).
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass  # closed with the refused request's bytes still unread
    if unfinished:
        assert out == b"" or out.split(b" ", 2)[1].startswith(b"4"), (name, out[:200])
    else:
        status = out.split(b" ", 2)[1] if out.startswith(b"HTTP/1.") else b""
        # 4xx, or 505 for a version oxgate does not speak
        assert status.startswith(b"4") or status == b"505", (name, error.__name__, out[:200])
    # Never served: the app's answer carries the request as JSON.
    assert b'"method"' not in out, (name, out[:300])
    assert srv.proc.poll() is None


def test_left_out_cases_are_in_the_corpus():
    """The list of cases left out names only cases there are, and each valid
    case that needs a setting oxgate lacks is on it (an invalid one is
    refused with or without its relaxation)."""
    every = set(case_names("valid")) | set(case_names("invalid"))
    assert set(LEFT_OUT) <= every
    for name in every:
        with open(os.path.join(REQUESTS, name + ".py")) as f:
            source = f.read()
        lacking = [k for k in ("header_map", "permit_obsolete_folding", "strip_header_spaces",
                               "permit_unconventional_http_method", "casefold_http_method", "forwarded_allow_ips")
                   if f"cfg.set('{k}'" in source or f'cfg.set("{k}"' in source]
        if lacking and name.startswith("valid/"):
            assert LEFT_OUT.get(name) == NO_SUCH_SETTING, (name, lacking)


@pytest.mark.parametrize("order", ["length first", "coding first"])
def test_length_and_chunked_together_is_refused(servers, order):
    """CL.TE and TE.CL, as Gunicorn: 400 and the connection closed, after a
    request before it on the same connection (plain, then chunked) is
    served (the first asks to upgrade, and is answered 200: hyper reads
    on), and with what a proxy going by the length sent next never read
    as a request. hyper alone would serve it as chunked, leaving no trace
    of the length; the refusal is oxgate's own (proto/h1_framing.rs)."""
    srv = servers({})
    fields = [b"Content-Length: 6\r\n", b"Transfer-Encoding: chunked\r\n"]
    if order == "coding first":
        fields.reverse()
    data = (b"GET /first HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
            b"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"POST /p HTTP/1.1\r\nHost: x\r\n" + b"".join(fields) + b"\r\n"
            b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    with connect(srv.port, data, "whole") as s:
        out, closed = read_until_closed(s)
    assert out.count(b"HTTP/1.1 200 ") == 2, out
    assert b'"/first"' in out and b'"/second"' in out
    assert out.count(b"HTTP/1.1 400 ") == 1
    assert b"Content-Length and Transfer-Encoding together" in out
    assert b'"/p"' not in out and b"/smuggled" not in out
    assert out.lower().endswith(b"content-length and transfer-encoding together\n")


@pytest.mark.parametrize("how", ["whole", "1"])
@pytest.mark.parametrize("after_last_chunk", [b"\n", b"X-T: 1\n\r\n\r\n"])
def test_a_trailer_line_without_crlf_ends_the_connection(servers, how, after_last_chunk):
    """After `0\\r\\n`, a line ending in a bare LF: hyper would read on to
    the next CRLFCRLF as trailers, swallowing a pipelined request (the one
    a front end sees answered next would be another's) and leaving the
    connection's later requests unwatched. The connection ends there: no
    request after it is answered."""
    srv = servers({})
    data = (b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
            + after_last_chunk + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /third HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    with connect(srv.port, data, how) as s:
        out, closed = read_until_closed(s)
    assert closed, "the connection was left open"
    assert b'"/second"' not in out and b'"/third"' not in out, out
    assert out.count(b"HTTP/1.1 ") <= 1, out


@pytest.mark.parametrize("codings", [b"chunked, chunked", b",chunked"])
def test_chunked_applied_twice_or_an_empty_coding_is_refused(servers, codings):
    """RFC 9112 §6.1: chunked is applied once. Gunicorn answers 400 (501
    for the empty member); hyper reads only the last coding."""
    srv = servers({})
    data = b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + codings + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    with connect(srv.port, data, "whole") as s:
        out = s.recv(65536)
    assert out.startswith(b"HTTP/1.1 400"), out
    assert b'"/p"' not in out
