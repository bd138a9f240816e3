"""Apps that raise or break WSGI's rules: a 500 or a cut connection, the reason in the log, and serving goes on."""
import socket

import pytest
import requests

from helpers import raw_request


def test_exception_is_500_and_logged_not_shown(srv):
    r = requests.get(srv.url + "/raise")
    assert r.status_code == 500
    assert b"deliberate" not in r.content and b"Traceback" not in r.content
    log = srv.log()
    assert "Traceback" in log and "deliberate failure in the app" in log
    srv.wait_log("GET /raise")  # with --threads, written after the response
    assert requests.get(srv.url + "/thread").status_code == 200


def test_exception_after_first_chunk_cuts_the_connection(srv):
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(srv.url + "/raise-late").content
    assert "deliberate failure after the first chunk" in srv.log()
    assert requests.get(srv.url + "/thread").status_code == 200
    # Said once, with its traceback: not again as hyper's "error from
    # user's Body stream" when the connection is cut.
    assert "connection closed" not in srv.log(), srv.log()


@pytest.mark.parametrize("path,logged", [
    ("/no-start", "without calling start_response"),
    ("/str-body", "a WSGI body is made of bytes"),
    ("/not-latin1", "character above U+00FF"),
])
def test_protocol_violations_are_500(srv, path, logged):
    r = requests.get(srv.url + path)
    assert r.status_code == 500
    assert logged in srv.log()
    # Nothing of the refused head, nor of the request's headers, leaks into
    # the next response's on the same connection.
    out = raw_request(srv.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Mine: m\r\n\r\n"
                      "GET /nolength HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert out.count(b"HTTP/1.1 ") == 2, out
    head = out.rsplit(b"HTTP/1.1 ", 1)[1].split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    assert b"content-type: text/plain" in head, head
    assert not any(b"caf" in h or b"x-fine" in h or b"x-mine" in h or b"host" in h for h in head), head


def test_an_apps_hop_by_hop_headers_are_dropped_and_its_connection_close_closes(srv):
    """PEP 3333 lets a server refuse them, but Gunicorn drops them and
    uWSGI passes them on: an app that sets them (Flask's
    `response.headers["Connection"] = "close"`) was a 500. They are
    dropped; Connection: close closes the connection after the response,
    as an ASGI app's does."""
    out = raw_request(srv.port, b"GET /hop HTTP/1.1\r\nHost: x\r\n\r\nGET /hop HTTP/1.1\r\nHost: x\r\n\r\n",
                      expect_close=True)
    assert out.count(b"HTTP/1.1 ") == 1, out  # the second request was not read
    head, body = out.split(b"\r\n\r\n", 1)
    lines = head.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 200") and body == b"fine", out
    assert b"connection: close" in lines, head
    assert not any(h.startswith((b"keep-alive", b"transfer-encoding")) for h in lines), head


@pytest.mark.parametrize("path,kept", [("/slow", False), ("/hop", False), ("/thread", True)])
def test_an_http_10_keep_alive_client_is_told_keep_alive_only_when_the_connection_is_kept(srv, path, kept):
    """An HTTP/1.0 client can keep its connection only for a response it
    sees the end of by its length. A body without one ends when the
    connection closes; the head said `Connection: keep-alive` even so."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
            closed = True
        except socket.timeout:
            closed = False
    head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.0 200"), out
    assert (b"connection: keep-alive" in head, closed) == (kept, not kept), out


def test_a_trailer_header_and_headers_as_lists_are_sent_as_gunicorn_sends_them(srv):
    """Trailer is no hop-by-hop header (RFC 9110; wsgiref's list has RFC
    2616's "Trailers"), and a header given as a two-item list is taken as
    Gunicorn takes it: both were a 500."""
    r = requests.get(srv.url + "/trailer-and-lists")
    assert (r.status_code, r.text, r.headers.get("Trailer")) == (200, "fine", "X-Checksum")


def test_an_iterable_whose_iter_raises_is_logged_as_what_it_raised(srv):
    """The app's own error, with its traceback: it was logged as "the app
    returned a non-iterable", the traceback lost."""
    assert requests.get(srv.url + "/iter-raises").status_code == 500
    srv.wait_log("deliberate failure in __iter__")
    log = srv.log()
    assert "RuntimeError: deliberate failure in __iter__" in log and "non-iterable" not in log
    assert "in __iter__" in log  # the traceback's frame


def test_short_body_closes_the_connection(srv):
    out = raw_request(srv.port, b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"content-length: 100" in head.lower()
    assert body == b"only ten b"  # and then the server closed instead of hanging


def test_long_body_is_cut_to_content_length(srv):
    out = raw_request(srv.port, b"GET /long HTTP/1.1\r\nHost: x\r\n\r\nGET /thread HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, rest = out.split(b"\r\n\r\n", 1)
    assert rest.startswith(b"12345HTTP/1.1 200 OK")


def test_a_status_of_three_digits_alone_gets_the_standard_reason(srv):
    """start_response("200", ...): Gunicorn and uWSGI send it (uWSGI with
    the standard reason); oxgate answered 500. Other malformed ones still
    are 500."""
    for code, line in (("200", b"HTTP/1.1 200 OK\r\n"), ("404", b"HTTP/1.1 404 Not Found\r\n")):
        out = raw_request(srv.port, f"GET /bare-status?{code} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert out.startswith(line) and out.endswith(b"bare"), out
    out = raw_request(srv.port, b"GET /bare-status?20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500 "), out
