"""Static files (issue #15): --static-map and friends, compared request by
request with real nginx serving the same directory; traversal attempts over
HTTP and over uwsgi; Django's collectstatic output beside the app."""
import contextlib
import email
import gzip
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest
import requests

from helpers import (APPS, BIN, ECHO, ROOT, VENV, cgi, fcgi_request, free_port, listens, nginx_serving, packet,
                     read_records, scgi_packet, start_nginx, stdout_of, traced_calls, uwsgi_request, wait_for)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "files"
    (root / "sub").mkdir(parents=True)
    (root / "noindex").mkdir()
    (root / "hello.txt").write_text("hello static\n")
    (root / "style.css").write_text("body { color: teal }\n")
    (root / "page.html").write_text("<h1>page</h1>\n")
    (root / "data.json").write_text('{"a": 1}\n')
    (root / "app.js").write_text("console.log(1)\n")
    (root / "pixel.png").write_bytes(bytes(range(256)) * 4)
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / "empty.txt").write_bytes(b"")
    (root / "with space.txt").write_text("spaced\n")
    (root / "ünïcödé.txt").write_text("unicode\n")
    (root / "sub" / "index.html").write_text("<p>index</p>\n")
    (root / "noindex" / "x.txt").write_text("x\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    os.symlink(tmp_path / "secret.txt", root / "link-out.txt")
    os.symlink(root / "hello.txt", root / "link-in.txt")
    return root


@pytest.fixture
def both(serve, tree, tmp_path):
    """(oxgate URL, nginx URL): /static/ is `tree` on both."""
    s = serve("--static-map", f"/static={tree}", "--static-index", "index.html", "--wsgi-file", ECHO)
    with nginx_serving(tmp_path, f"location /static/ {{ alias {tree}/; index index.html; }}",
                       http="include /etc/nginx/mime.types; sendfile on; charset utf-8;"
                            " charset_types text/plain text/css text/html application/json;") as port:
        yield s.url, f"http://127.0.0.1:{port}"


def get(url, path, method="GET", headers=None):
    r = requests.request(method, url + path, headers=headers or {}, allow_redirects=False, timeout=10)
    return r


# What must agree with nginx (ETags differ in form: each is checked against
# its own server).
COMPARED = ("content-type", "content-length", "content-range", "last-modified")


def same(ours, theirs, what):
    assert ours.status_code == theirs.status_code, (what, ours.status_code, theirs.status_code, ours.text[:200])
    if ours.status_code >= 400:
        # Error pages differ in form (nginx's are HTML); the range they
        # refuse does not.
        assert ours.headers.get("content-range") == theirs.headers.get("content-range"), what
        return
    multipart = ours.headers.get("content-type", "").startswith("multipart/byteranges; boundary=")
    for h in COMPARED:
        a, b = ours.headers.get(h), theirs.headers.get(h)
        if multipart and h == "content-length":
            continue  # each picks its own boundary (the parts are compared)
        if multipart and h == "content-type":
            a, b = a.split(";")[0], b.split(";")[0]
        if h == "content-type" and a == "text/html":
            # nginx's `charset` labels HTML always; an HTML file names its
            # own encoding, which the label would override.
            b = b.removesuffix("; charset=utf-8")
        assert a == b, (what, h, a, b)
    if multipart:
        assert int(ours.headers["content-length"]) == len(ours.content)
    if not ours.headers.get("content-type", "").startswith("multipart/"):
        assert ours.content == theirs.content, what


@pytest.mark.parametrize("path", ["/static/hello.txt", "/static/style.css", "/static/page.html",
                                  "/static/data.json", "/static/pixel.png", "/static/big.bin",
                                  "/static/empty.txt", "/static/with%20space.txt",
                                  "/static/%C3%BCn%C3%AFc%C3%B6d%C3%A9.txt", "/static/sub/",
                                  "/static/link-in.txt", "/static/noindex/"])
def test_get_and_head_as_nginx(both, path):
    ours, theirs = both
    for method in ("GET", "HEAD"):
        a, b = get(ours, path, method), get(theirs, path, method)
        same(a, b, f"{method} {path}")
        if a.status_code == 200:
            assert a.headers["etag"].startswith('"') and a.headers["accept-ranges"] == "bytes"


def test_javascript_is_text_with_a_charset(both):
    # Debian's mime.types says text/javascript (RFC 9239); nginx's own table
    # still says application/javascript.
    assert get(both[0], "/static/app.js").headers["content-type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize("range_", ["bytes=0-9", "bytes=10-", "bytes=-5", "bytes=0-0", "bytes=5-1000000",
                                    "bytes=1000000-", "bytes=abc", "bytes=5-2", "bytes=0-1,4-6", "bytes=-65536",
                                    "bytes=5-2,0-1", "bytes=-0", "items=0-1", "bytes=1-3,8-9,12-",
                                    "bytes=8-9,0-1,4-5", "bytes=-2,0-1"])
def test_ranges_as_nginx(both, range_):
    ours, theirs = both
    a = get(ours, "/static/hello.txt", headers={"Range": range_})
    b = get(theirs, "/static/hello.txt", headers={"Range": range_})
    same(a, b, range_)
    if a.headers.get("content-type", "").startswith("multipart/byteranges"):
        assert parts(a) == parts(b)


def test_a_range_sent_twice_is_the_first_as_nginx_takes_it(both):
    """Two Range headers: nginx serves the first; oxgate joined them into
    one value that is no range, and answered 416."""
    def twice(url):
        host, port = url.removeprefix("http://").split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.putrequest("GET", "/static/hello.txt")
        c.putheader("Range", "bytes=0-4")
        c.putheader("Range", "bytes=6-8")
        c.endheaders()
        r = c.getresponse()
        return r.status, r.getheader("content-range"), r.read()
    ours, theirs = (twice(url) for url in both)
    assert ours == theirs == (206, "bytes 0-4/13", b"hello"), (ours, theirs)


@pytest.mark.parametrize("range_", ["bytes=0-1", "bytes=-5", "bytes=1000000-", "bytes=0-1,4-6", "items=0-1"])
def test_a_head_with_a_range_is_answered_as_nginx(both, range_):
    """HEAD with Range: 206 and the part's length, as nginx answers the
    probes of download managers (oxgate answered 200 with the whole
    length)."""
    ours, theirs = both
    a = get(ours, "/static/hello.txt", "HEAD", headers={"Range": range_})
    b = get(theirs, "/static/hello.txt", "HEAD", headers={"Range": range_})
    assert (a.status_code, a.headers.get("content-range")) == (b.status_code, b.headers.get("content-range")), range_
    if a.status_code < 400 and not a.headers.get("content-type", "").startswith("multipart/"):
        assert a.headers.get("content-length") == b.headers.get("content-length"), range_
    assert a.content == b"" and a.headers["content-length"] != "0", range_

@pytest.mark.parametrize("range_", ["bytes=0-", "bytes=0-3", "bytes=-3"])
def test_a_range_of_an_empty_file_is_the_empty_file_as_nginx_sends_it(both, range_):
    """Not a 416 to the media clients and caches that always ask for a
    range: nginx sends an empty file whole (200)."""
    ours, theirs = both
    a = get(ours, "/static/empty.txt", headers={"Range": range_})
    b = get(theirs, "/static/empty.txt", headers={"Range": range_})
    assert (a.status_code, a.content) == (b.status_code, b.content) == (200, b""), range_
    same(a, b, range_)


def test_a_mount_given_again_looks_for_the_index_in_its_next_directory(serve, tmp_path):
    """As uWSGI moves on to the next map: a directory the first map has
    without its index is looked for in the second, which has it; one no
    map has an index for is 403, as nginx answers."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "d").mkdir(parents=True)
    (a / "d" / "a.txt").write_text("A")
    (b / "d").mkdir(parents=True)
    (b / "d" / "index.html").write_text("B")
    (a / "bare").mkdir()
    s = serve("--static-map", f"/m={a}", "--static-map", f"/m={b}", "--static-index", "index.html",
              "--wsgi-file", ECHO)
    r = requests.get(s.url + "/m/d/", timeout=10)
    assert (r.status_code, r.text) == (200, "B")
    assert requests.get(s.url + "/m/d/a.txt", timeout=10).text == "A"
    assert requests.get(s.url + "/m/bare/", timeout=10).status_code == 403


def parts(r):
    """A multipart/byteranges body as [(content-range, bytes)]."""
    msg = email.message_from_bytes(b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content)
    return [(p["Content-Range"], p.get_payload(decode=True)) for p in msg.get_payload()]


def test_a_range_of_a_big_file_is_its_bytes(both, tree):
    data = (tree / "big.bin").read_bytes()
    r = get(both[0], "/static/big.bin", headers={"Range": "bytes=1000-250999"})
    assert r.status_code == 206 and r.content == data[1000:251000]


def test_many_or_overlapping_ranges_cannot_multiply_the_file(both, tree):
    """RFC 9110 §17.15: one small head must not make the server send the
    file over and over. Overlapping ranges are merged into one part; more
    than 64 parts get the whole file, with 200 (Apache's MaxRanges)."""
    data = (tree / "big.bin").read_bytes()
    r = get(both[0], "/static/big.bin", headers={"Range": "bytes=" + "0-," * 2000 + "0-"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 0-{len(data) - 1}/{len(data)}"
    assert r.content == data
    r = get(both[0], "/static/big.bin", headers={"Range": "bytes=10-19,0-9,5-30,100-109"})
    assert parts(r) == [(f"bytes 0-30/{len(data)}", data[:31]), (f"bytes 100-109/{len(data)}", data[100:110])]
    sixty_four = ",".join(f"{i * 10}-{i * 10 + 4}" for i in range(64))
    r = get(both[0], "/static/big.bin", headers={"Range": "bytes=" + sixty_four})
    assert r.status_code == 206 and [body for _, body in parts(r)] == [data[i * 10:i * 10 + 5] for i in range(64)]
    r = get(both[0], "/static/big.bin", headers={"Range": f"bytes={sixty_four},1000-1001"})
    assert r.status_code == 200 and r.content == data


def test_if_range_with_a_date_must_be_the_files_exact_date(both, tree):
    """RFC 9110 §13.1.5 (and nginx): a later date is not a match. A file
    put back to an older version is not the one the client has part of."""
    later = "Fri, 01 Jan 2100 00:00:00 GMT"
    for url in both:
        r = get(url, "/static/hello.txt", headers={"Range": "bytes=0-3", "If-Range": later})
        assert (r.status_code, r.content) == (200, b"hello static\n"), url
        r = get(url, "/static/hello.txt", headers={"Range": "bytes=0-3", "If-Range": 'W/"weak"'})
        assert r.status_code == 200, url


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_gzip_dir_behind_a_deploys_link_follows_it(serve, tmp_path, when):
    """--static-gzip-dir named through a `current` link, which the map
    follows to each new release: the new release's .gz files are served
    too (the link's target at the start was compared, so they were not
    after a deploy); likewise a directory made after the start."""
    releases = [tmp_path / "r1", tmp_path / "r2"]
    for r in releases:
        (r / "static").mkdir(parents=True)
        (r / "static" / "a.css").write_text(f"{r.name} plain\n")
        (r / "static" / "a.css.gz").write_bytes(gzip.compress(f"{r.name} gzipped\n".encode()))
    current = tmp_path / "current"
    if when == "before":
        current.symlink_to(releases[0])
    s = serve("--static-map", f"/static={current}/static", "--static-gzip-dir", f"{current}/static",
              "--wsgi-file", ECHO, "--processes", "1")

    def served():
        r = requests.get(s.url + "/static/a.css", headers={"Accept-Encoding": "gzip"}, timeout=10)
        return r.headers.get("Content-Encoding"), r.text
    if when == "before":
        assert served() == ("gzip", "r1 gzipped\n")
    new_link = tmp_path / "current.new"
    new_link.symlink_to(releases[1])
    os.replace(new_link, current)
    wait_for(lambda: served() == ("gzip", "r2 gzipped\n"), what="the new release's .gz served")


def test_a_static_directory_replaced_by_a_deploy_is_served_from(serve, tmp_path):
    """`mv static static.old; mv static.new static`, or a `current` link
    moved to a new release: served from the new tree within a second, as
    nginx (which opens by name) serves it at once; a directory made after
    start-up (collectstatic) is served once it exists."""
    releases = [tmp_path / "r1", tmp_path / "r2"]
    for i, r in enumerate(releases):
        (r / "static").mkdir(parents=True)
        (r / "static" / f"only-{i}.css").write_text(f"release {i}\n")
        (r / "static" / "favicon.ico").write_text(f"icon {i}\n")
    current = tmp_path / "current"
    current.symlink_to(releases[0])
    late = tmp_path / "late"
    s = serve("--static-map", f"/static={current}/static", "--static-map", f"/late={late}", "--wsgi-file", ECHO,
              "--static-map", f"/favicon.ico={current}/static/favicon.ico", "--processes", "1")
    assert get(s.url, "/static/only-0.css").text == "release 0\n"
    assert get(s.url, "/favicon.ico").text == "icon 0\n"
    assert get(s.url, "/late/x.css").json()["path"] == "/late/x.css"  # not there yet: the app's
    new_link = tmp_path / "current.new"
    new_link.symlink_to(releases[1])
    os.replace(new_link, current)  # the atomic switch deploy tools make
    wait_for(lambda: get(s.url, "/static/only-1.css").text == "release 1\n", what="the new release served")
    assert get(s.url, "/static/only-0.css").json()["path"] == "/static/only-0.css"
    # A map to one file follows the link too.
    wait_for(lambda: get(s.url, "/favicon.ico").text == "icon 1\n", what="the new release's icon")
    # A map to one file that is not there yet (a build step makes it).
    later_icon = tmp_path / "made-later.ico"
    s2 = serve("--static-map", f"/icon.ico={later_icon}", "--wsgi-file", ECHO, "--processes", "1")
    assert get(s2.url, "/icon.ico").json()["path"] == "/icon.ico"
    later_icon.write_text("icon made later\n")
    assert get(s2.url, "/icon.ico").text == "icon made later\n"
    assert get(s2.url, "/icon.ico/x").json()["path"] == "/icon.ico/x"
    late.mkdir()
    (late / "x.css").write_text("late\n")
    wait_for(lambda: get(s.url, "/late/x.css").text == "late\n", what="the directory made after start-up served")
    # The plain rename of a directory, too.
    old = tmp_path / "plain"
    (old / "a.css").parent.mkdir()
    (old / "a.css").write_text("a\n")
    s2 = serve("--static-map", f"/s={old}", "--wsgi-file", ECHO, "--processes", "1")
    assert get(s2.url, "/s/a.css").text == "a\n"
    old.rename(tmp_path / "plain.old")
    old.mkdir()
    (old / "b.css").write_text("b\n")
    wait_for(lambda: get(s2.url, "/s/b.css").text == "b\n", what="the renamed-in directory served")


def test_check_static_leaves_paths_no_file_could_have_to_the_app(serve, tree):
    """Under --check-static every app URL is looked at; one with a
    backslash or `..` (an API's own path) is the app's, as in uWSGI, not a
    400. Under a --static-map mount it stays a 400."""
    s = serve("--check-static", str(tree), "--static-map", f"/static={tree}", "--wsgi-file", ECHO)
    host, port = s.url.removeprefix("http://").split(":")
    for path, expect in [("/api/search/a%5Cb", 200), ("/api/x/../y", 200), ("/static/..%5csecret.txt", 400)]:
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == expect, (path, r.status, body[:100])
        if expect == 200:
            assert b'"path"' in body


def test_a_static_map_at_the_root_shares_the_apps_urls_as_uwsgi(serve, tree):
    """`--static-map /=dist` (a single-page app beside its API) sees every
    URL of the app, as --check-static does: a path no file could have, a
    POST to a file or to a directory without its slash is the app's, as in
    uWSGI (they were a 400, a 405 and a 301, which loses the form)."""
    s = serve("--static-map", f"/={tree}", "--static-index", "index.html", "--wsgi-file", ECHO)
    for method, path in [("GET", "/api/search/a%5Cb"), ("GET", "/api/users/..%2Fadmin"), ("GET", "/api/x%00y"),
                         ("POST", "/hello.txt"), ("POST", "/sub"), ("POST", "/")]:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        c.request(method, path, body=b"a=1" if method == "POST" else None)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and b'"path"' in body, (method, path, r.status, body[:100])
    assert get(s.url, "/hello.txt").text == "hello static\n"
    assert get(s.url, "/sub/").text == "<p>index</p>\n"
    r = requests.get(s.url + "/sub", allow_redirects=False, timeout=10)
    assert (r.status_code, r.headers["location"]) == (301, "/sub/")
    # With no app behind, the map is a static server's: nginx's answers.
    s = serve("--static-map", f"/={tree}")
    assert requests.post(s.url + "/hello.txt", data=b"a=1", timeout=10).status_code == 405
    assert get(s.url, "/a%5Cb").status_code == 400


def test_a_worker_out_of_descriptors_answers_503_not_403(serve, tree):
    """EMFILE is the server's trouble: 503 with Retry-After (and a log
    line), not the 403 a file one may not read gets."""
    import resource
    s = serve("--static-map", f"/static={tree}", "--wsgi-file", ECHO, "--processes", "1")
    (worker,) = s.wait_workers(1)
    assert get(s.url, "/static/hello.txt").status_code == 200
    # The connection first (its socket taken), then no room for the file.
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(b"GET /static/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.recv(4096).startswith(b"HTTP/1.1 200 ")
    # A new descriptor takes the lowest free number, which must be below
    # the limit: a limit at that number leaves none.
    in_use = {int(fd) for fd in os.listdir(f"/proc/{worker}/fd")}
    lowest_free = min(set(range(max(in_use) + 2)) - in_use)
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (lowest_free, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    c.sendall(b"GET /static/hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = c.recv(4096)
    c.close()
    assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head.lower(), head
    wait_for(lambda: "cannot open files: Too many open files; answering 503" in s.log(), what="the log line")


def test_conditional_requests_as_nginx(both):
    for url in both:
        first = get(url, "/static/hello.txt")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        cases = [
            ({"If-None-Match": etag}, 304),
            ({"If-None-Match": '"other"'}, 200),
            ({"If-None-Match": "*"}, 304),
            ({"If-Modified-Since": modified}, 304),
            ({"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}, 200),
            ({"If-None-Match": '"other"', "If-Modified-Since": modified}, 200),  # the ETag decides
            ({"If-Match": '"other"'}, 412),
            ({"If-Match": etag}, 200),
            ({"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}, 412),
            ({"Range": "bytes=0-3", "If-Range": etag}, 206),
            ({"Range": "bytes=0-3", "If-Range": '"other"'}, 200),
            ({"Range": "bytes=0-3", "If-Range": modified}, 206),
        ]
        for headers, status in cases:
            r = get(url, "/static/hello.txt", headers=headers)
            assert r.status_code == status, (url, headers, r.status_code)
            if status == 304:
                assert r.content == b"" and r.headers["etag"] == etag


def test_a_directory_without_its_slash_is_redirected(both):
    ours, theirs = both
    a, b = get(ours, "/static/sub?x=1"), get(theirs, "/static/sub?x=1")
    assert a.status_code == b.status_code == 301
    assert a.headers["location"] == "/static/sub/?x=1"
    assert b.headers["location"].endswith("/static/sub/?x=1")
    # one without an index too, as nginx does (then 403 at the slash)
    a, b = get(ours, "/static/noindex"), get(theirs, "/static/noindex")
    assert a.status_code == b.status_code == 301 and a.headers["location"] == "/static/noindex/"


def test_other_methods_get_405_with_allow(both):
    r = get(both[0], "/static/hello.txt", "POST")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert get(both[1], "/static/hello.txt", "POST").status_code == 405


def test_no_file_goes_on_to_the_app(both):
    # uWSGI's rule: a mapped path with no file behind it is the app's.
    r = get(both[0], "/static/missing.css")
    assert r.status_code == 200 and r.json()["path"] == "/static/missing.css"
    assert get(both[0], "/staticfoo/hello.txt").json()["path"] == "/staticfoo/hello.txt"
    assert get(both[0], "/hello.txt").json()["path"] == "/hello.txt"


TRAVERSALS = ["/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt",
              "/static/sub/../../secret.txt", "/static/..%5csecret.txt", "/static/hello.txt%00.png",
              "/static/link-out.txt", "/static/%2e%2e%2f%2e%2e%2fetc/passwd", "/static/....//secret.txt"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_over_http_never_leaves_the_root(both, path):
    host, port = both[0].removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", path)  # as sent: no client-side normalisation
    r = c.getresponse()
    body = r.read()
    assert b"outside the root" not in body and b"root:" not in body
    assert r.status in (400, 403, 404) or (r.status == 200 and b'"path"' in body), (path, r.status, body[:100])


@pytest.mark.parametrize("path", ["/static/../secret.txt", "/static/sub/../../secret.txt", "/static/link-out.txt",
                                  "/static/..\\secret.txt", "/static/hello.txt\0"])
def test_traversal_over_uwsgi_never_leaves_the_root(serve, tree, path):
    up = free_port()
    serve("--static-map", f"/static={tree}", "--wsgi-file", ECHO, "--uwsgi-socket", f"127.0.0.1:{up}")
    reply = uwsgi_request(up, cgi(path=path))
    assert b"outside the root" not in reply
    assert reply.split(b"\r\n")[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 403 Forbidden"), reply[:200]


def test_traversal_over_uwsgi_behind_nginx_never_leaves_the_root(serve, tree, tmp_path):
    """Every form of the HTTP test, sent as written to nginx, which passes
    what it makes of it to oxgate over uwsgi."""
    sock = tmp_path / "app.sock"
    serve("--static-map", f"/static={tree}", "--wsgi-file", ECHO, "--uwsgi-socket", str(sock),
          "--chmod-socket", "666")
    with nginx_serving(tmp_path, f"location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass unix:{sock}; }}") as port:
        served = 0
        for path in TRAVERSALS:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", path)  # as sent: no client-side normalisation
            r = c.getresponse()
            body = r.read()
            c.close()
            assert b"outside the root" not in body and b"root:" not in body, path
            assert r.status in (400, 403, 404) or (r.status == 200 and b'"path"' in body), (path, r.status,
                                                                                          body[:100])
            served += r.status != 400  # nginx refuses some forms itself
        assert served >= 5  # most forms reached oxgate
        # and a plain file still comes through
        assert requests.get(f"http://127.0.0.1:{port}/static/hello.txt", timeout=10).text == "hello static\n"


def test_a_file_behind_nginx_over_uwsgi_is_sent_whole(serve, tree, tmp_path):
    sock = tmp_path / "app.sock"
    serve("--static-map", f"/static={tree}", "--wsgi-file", ECHO, "--uwsgi-socket", str(sock),
          "--chmod-socket", "666")
    with nginx_serving(tmp_path, f"location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass unix:{sock}; }}") as port:
        r = requests.get(f"http://127.0.0.1:{port}/static/big.bin", timeout=10)
        assert r.status_code == 200 and r.content == (tree / "big.bin").read_bytes()
        r = requests.get(f"http://127.0.0.1:{port}/static/big.bin", headers={"Range": "bytes=-100"}, timeout=10)
        assert r.status_code == 206 and r.content == (tree / "big.bin").read_bytes()[-100:]


# nginx in front of each gateway socket, FastCGI with kept connections.
GATEWAY_FRONT = {
    "uwsgi": ("--uwsgi-socket", "include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:{up};"),
    "scgi": ("--scgi-socket", "include /etc/nginx/scgi_params; scgi_pass 127.0.0.1:{up};"),
    "fastcgi": ("--fastcgi-socket", "include /etc/nginx/fastcgi_params; fastcgi_keep_conn on; fastcgi_pass ox;"),
}


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/test.sh installs it)")
@pytest.mark.parametrize("front", ["http", "uwsgi", "scgi", "fastcgi"])
def test_files_go_out_with_sendfile_on_every_protocol(serve, tree, tmp_path, front):
    """A file of a page or more goes from the page cache to the socket with
    sendfile(2), its head held back (MSG_MORE) to leave with its first
    bytes: over HTTP, and to nginx over uwsgi, SCGI and FastCGI. A smaller
    file is read and goes out in one write with its head."""
    (tree / "page.bin").write_bytes(os.urandom(4096))
    (tree / "small.bin").write_bytes(os.urandom(1000))
    args = ["--static-map", f"/static={tree}", "--wsgi-file", ECHO, "--processes", "1"]
    up = free_port()
    if front != "http":
        args += [GATEWAY_FRONT[front][0], f"127.0.0.1:{up}"]
    s = serve(*args)
    with contextlib.ExitStack() as stack:
        base = s.url
        if front != "http":
            upstream = f"upstream ox {{ server 127.0.0.1:{up}; keepalive 4; }}"
            location = f"location / {{ {GATEWAY_FRONT[front][1].format(up=up)} }}"
            base = f"http://127.0.0.1:{stack.enter_context(nginx_serving(tmp_path, location, upstream))}"
        (worker,) = s.wait_workers(1)
        with traced_calls([worker], "sendfile,sendto,pread64", tmp_path) as traced:
            # traced once the app's reply shows
            deadline = time.monotonic() + 10
            while "sendto(" not in traced() and time.monotonic() < deadline:
                requests.get(base + "/", timeout=10)
            for name in ("big.bin", "page.bin", "small.bin"):
                r = requests.get(f"{base}/static/{name}", timeout=10)
                assert r.status_code == 200 and r.content == (tree / name).read_bytes(), (front, name)
    # the event loop's thread: the one that sends files
    calls = next(p.read_text() for p in tmp_path.glob("strace.*") if "sendfile(" in p.read_text())
    sent = [int(n) for n in re.findall(r"sendfile\(.*\)\s+= (\d+)", calls)]
    assert sum(sent) == 300_000 + 4096, calls[-3000:]
    # the small file alone is read, whole, and no file is read otherwise
    reads = [int(n) for n in re.findall(r"pread64\(.*\)\s+= (\d+)", calls)]
    assert [n for n in reads if n >= 1000] == [1000], calls[-3000:]
    # each head before a file is held for the file's bytes: a send with
    # MSG_MORE, then sendfile on the same socket (FastCGI: a record header
    # before each piece of the file)
    # (cachestat(2), which strace may not know by name, may come between)
    lines = [l for l in calls.splitlines() if not l.startswith(("cachestat(", "syscall_0x1c3("))]
    corked = [(int(m[1]), lines[i + 1]) for i, l in enumerate(lines[:-1])
              if (m := re.match(r"sendto\((\d+), .*MSG_MORE", l))]
    assert len(corked) >= 2, calls[-3000:]
    assert all(after.startswith(f"sendfile({fd}, ") for fd, after in corked), calls[-3000:]


def cached_pages(path):
    """cachestat(2) of a whole file: its pages in the page cache, or None
    where the kernel does not answer (before 6.5, EPERM)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        rng = ctypes.create_string_buffer(struct.pack("QQ", 0, 0))  # len 0: to the end
        stat = ctypes.create_string_buffer(40)
        if libc.syscall(451, fd, rng, stat, 0) != 0:
            return None
        return struct.unpack("5Q", stat.raw)[0]
    finally:
        os.close(fd)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/test.sh installs it)")
@pytest.mark.parametrize("front", ["http", "uwsgi", "fastcgi"])
def test_a_file_not_in_the_page_cache_is_read_in_off_the_event_loop(serve, tmp_path, front):
    """The pages of a file dropped from the page cache are read on a
    blocking thread; the event loop's thread then sends them with sendfile
    and never reads the file itself (nor waits on the disk)."""
    root = tmp_path / "files"
    root.mkdir()
    data = os.urandom(3 << 20)
    with open(root / "cold.bin", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    up = free_port()
    flag = {"http": [], "uwsgi": ["--uwsgi-socket", f"127.0.0.1:{up}"],
            "fastcgi": ["--fastcgi-socket", f"127.0.0.1:{up}"]}[front]
    s = serve("--static-map", f"/static={root}", "--wsgi-file", ECHO, "--processes", "1", *flag)
    (worker,) = s.wait_workers(1)
    fd = os.open(root / "cold.bin", os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    if cached_pages(root / "cold.bin") != 0:
        pytest.skip("the kernel cannot say what is cached, or cannot drop this file's pages (tmpfs)")
    with traced_calls([worker], "sendfile,pread64,sendto", tmp_path) as traced:
        deadline = time.monotonic() + 10
        while "sendto(" not in traced() and time.monotonic() < deadline:
            requests.get(s.url + "/", timeout=10)
        if front == "http":
            body = requests.get(s.url + "/static/cold.bin", timeout=10).content
        elif front == "uwsgi":
            body = uwsgi_request(up, cgi(path="/static/cold.bin")).split(b"\r\n\r\n", 1)[1]
        else:
            with socket.create_connection(("127.0.0.1", up), timeout=10) as c:
                c.sendall(fcgi_request(1, [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/static/cold.bin"),
                                           ("SERVER_PROTOCOL", "HTTP/1.1"), ("QUERY_STRING", "")]))
                body = stdout_of(read_records(c), 1).split(b"\r\n\r\n", 1)[1]
        assert body == data
    per_thread = {p.name: p.read_text() for p in tmp_path.glob("strace.*")}
    sending = [t for t, calls in per_thread.items() if "sendfile(" in calls]
    reading = [t for t, calls in per_thread.items() if re.search(r"pread64\(.*\)\s+= 262144", calls)]
    assert sending and reading and not set(sending) & set(reading), per_thread.keys()
    sent = sum(int(n) for t in sending for n in re.findall(r"sendfile\(.*\)\s+= (\d+)", per_thread[t]))
    assert sent == len(data)


@pytest.mark.parametrize("front", ["uwsgi", "scgi", "fastcgi"])
def test_a_large_file_reaches_a_slow_front_end_whole_over_each_gateway(serve, tmp_path, front):
    """sendfile on a gateway socket that fills up: the worker waits for
    room and goes on, and every byte arrives in order (FastCGI: as STDOUT
    records of at most 64 KiB)."""
    root = tmp_path / "files"
    root.mkdir()
    data = os.urandom(8 << 20)
    (root / "large.bin").write_bytes(data)
    up = free_port()
    serve("--static-map", f"/static={root}", "--wsgi-file", ECHO, "--processes", "1",
          GATEWAY_FRONT[front][0], f"127.0.0.1:{up}")
    # (SCGI's CONTENT_LENGTH first, and its SCGI=1)
    vars = [("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", "GET"), ("PATH_INFO", "/static/large.bin"),
            ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_URI", "/static/large.bin"),
            ("SERVER_NAME", "x"), ("SERVER_PORT", "80"), ("REMOTE_ADDR", "127.0.0.1")]
    request = {"uwsgi": lambda: packet(vars), "scgi": lambda: scgi_packet(vars),
               "fastcgi": lambda: fcgi_request(1, vars)}[front]()
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        c.settimeout(30)
        c.connect(("127.0.0.1", up))
        c.sendall(request)
        got = bytearray()
        # Slowly at first (64 KiB every 10 ms for 0.5 s), then at once.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            got += c.recv(64 << 10)
            time.sleep(0.01)
        if front == "fastcgi":
            # records: read to END_REQUEST, then join the STDOUT contents
            while not re.search(rb"\x01\x03\x00\x01\x00\x08\x00\x00.{8}$", got, re.S):
                chunk = c.recv(1 << 20)
                assert chunk, "closed before END_REQUEST"
                got += chunk
            records, at = [], 0
            while at < len(got):
                _, kind, _, clen, plen, _ = struct.unpack(">BBHHBB", got[at:at + 8])
                records.append((kind, bytes(got[at + 8:at + 8 + clen])))
                at += 8 + clen + plen
            body = b"".join(c for k, c in records if k == 6)
            # the stream's end, then END_REQUEST, last
            assert records[-2] == (6, b"") and records[-1][0] == 3 and len(records) > 100
        else:
            while chunk := c.recv(1 << 20):
                got += chunk
            body = bytes(got)
    head, body = body.split(b"\r\n\r\n", 1)
    assert b"200" in head.split(b"\r\n")[0] and f"Content-Length: {len(data)}".encode() in head, head
    assert body == data


def ask_over(front, port, method, path, headers=()):
    """A request over `front` (uwsgi, scgi, fastcgi: a raw client; h2: curl
    with HTTP/2 prior knowledge): (status, lower-cased headers, body)."""
    if front == "h2":
        cmd = ["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-X", method, "--path-as-is",
               *(a for k, v in headers for a in ("-H", f"{k}: {v}")), f"http://127.0.0.1:{port}{path}"]
        if method == "HEAD":  # -I prints the head itself
            cmd[cmd.index("-D"):cmd.index("-X") + 2] = ["-I"]
        out = subprocess.run(cmd, capture_output=True, timeout=10).stdout
        assert out.startswith(b"HTTP/2 "), out[:100]
    else:
        extra = [("HTTP_" + k.upper().replace("-", "_"), v) for k, v in headers]
        vars = [("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", method), ("PATH_INFO", path),
                ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_URI", path),
                ("SERVER_NAME", "x"), ("SERVER_PORT", "80"), ("REMOTE_ADDR", "127.0.0.1"), *extra]
        packet_ = {"uwsgi": packet, "scgi": scgi_packet, "fastcgi": lambda v: fcgi_request(1, v)}[front](vars)
        out = uwsgi_request(port, packet_)
        if front == "fastcgi":
            out, at = bytearray(), out
            while at:
                _, kind, _, clen, plen, _ = struct.unpack(">BBHHBB", at[:8])
                if kind == 6:
                    out += at[8:8 + clen]
                at = at[8 + clen + plen:]
            out = bytes(out)
    head, body = out.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers_ = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines if ":" in l)}
    # a status line (uwsgi, HTTP/2), else a CGI Status header (SCGI, FastCGI)
    status = lines[0].split()[1] if lines[0].startswith("HTTP/") else headers_["status"].split()[0]
    return int(status), headers_, body


@pytest.mark.parametrize("front", ["uwsgi", "scgi", "fastcgi", "h2"])
def test_the_same_answers_over_every_protocol(serve, tree, front):
    """What the HTTP tests check against nginx, over the gateway protocols
    and HTTP/2: a file, HEAD, 405, a 304 and a 412, a range, a multi-range,
    an unsatisfiable range, a directory redirect, and traversal."""
    port = free_port()
    flag = {"uwsgi": "--uwsgi-socket", "scgi": "--scgi-socket", "fastcgi": "--fastcgi-socket", "h2": None}[front]
    args = ["--static-map", f"/static={tree}", "--static-index", "index.html", "--wsgi-file", ECHO]
    s = serve(*args, *([flag, f"127.0.0.1:{port}"] if flag else []))
    port = port if flag else s.port
    data = (tree / "big.bin").read_bytes()
    status, h, body = ask_over(front, port, "GET", "/static/big.bin")
    assert status == 200 and body == data and h["content-length"] == str(len(data))
    etag = h["etag"]
    status, h, body = ask_over(front, port, "HEAD", "/static/big.bin")
    assert status == 200 and body == b"" and h["content-length"] == str(len(data))
    status, h, _ = ask_over(front, port, "POST", "/static/big.bin")
    assert status == 405 and h["allow"] == "GET, HEAD"
    assert ask_over(front, port, "GET", "/static/big.bin", [("If-None-Match", etag)])[0] == 304
    assert ask_over(front, port, "GET", "/static/big.bin", [("If-Match", '"other"')])[0] == 412
    status, h, body = ask_over(front, port, "GET", "/static/big.bin", [("Range", "bytes=10-19")])
    assert status == 206 and body == data[10:20] and h["content-range"] == f"bytes 10-19/{len(data)}"
    status, h, body = ask_over(front, port, "GET", "/static/big.bin", [("Range", "bytes=0-1,5-6")])
    assert status == 206 and h["content-type"].startswith("multipart/byteranges") and data[5:7] in body
    status, h, _ = ask_over(front, port, "GET", "/static/big.bin", [("Range", "bytes=999999-")])
    assert status == 416 and h["content-range"] == f"bytes */{len(data)}"
    status, h, _ = ask_over(front, port, "GET", "/static/sub")
    assert status == 301 and h["location"].endswith("/static/sub/")
    for path in ("/static/../secret.txt", "/static/link-out.txt"):
        status, _, body = ask_over(front, port, "GET", path)
        assert status in (400, 403) and b"outside the root" not in body, (path, status)


def test_static_map2_check_static_skip_ext_and_safe(serve, tree, tmp_path):
    (tree / "static").mkdir()
    (tree / "static" / "kept.txt").write_text("kept\n")
    (tree / "script.php").write_text("<?php ?>\n")
    s = serve("--static-map2", f"/static={tree}", "--check-static", str(tree), "--static-skip-ext", ".php",
              "--static-safe", str(tmp_path), "--wsgi-file", ECHO)
    assert get(s.url, "/static/kept.txt").text == "kept\n"  # map2 keeps /static in the file's path
    assert get(s.url, "/hello.txt").text == "hello static\n"  # check-static: the file exists
    assert get(s.url, "/nothing").json()["path"] == "/nothing"  # it does not: the app
    assert get(s.url, "/script.php").json()["path"] == "/script.php"  # skipped extension
    assert get(s.url, "/link-out.txt").text == "outside the root\n"  # --static-safe allows it


def test_a_skipped_extension_is_never_served_by_another_way_to_its_file(serve, tree):
    """--static-skip-ext keeps a PHP file's source from being sent, however
    the path reaches it: a trailing `/.`, an index file, a link with
    another name. The app answers instead, as in uWSGI."""
    (tree / "script.php").write_text("<?php $password = 'hunter2'; ?>\n")
    (tree / "phpdir").mkdir()
    (tree / "phpdir" / "index.php").write_text("<?php $password = 'hunter2'; ?>\n")
    os.symlink(tree / "script.php", tree / "view.txt")
    s = serve("--check-static", str(tree), "--static-map", f"/m={tree}", "--static-skip-ext", ".php",
              "--static-index", "index.html", "--static-index", "index.php", "--wsgi-file", ECHO)
    host, port = s.url.removeprefix("http://").split(":")
    for path in ["/script.php/.", "/script.php/%2e", "/m/script.php/.", "/phpdir/", "/m/phpdir/", "/view.txt"]:
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert b"hunter2" not in body, (path, r.status, body)
        assert r.status == 200 and b'"path"' in body, (path, r.status, body[:200])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_a_directory_that_may_be_searched_but_not_listed_serves_its_index(serve):
    """A docroot of mode 711 (a home directory's): nginx, which needs only
    search permission, serves its index file; so does oxgate, run as a
    user who may not list it."""
    import tempfile
    base = tempfile.mkdtemp(prefix="oxgate-711-")
    try:
        os.chmod(base, 0o755)
        root = os.path.join(base, "site")
        os.makedirs(os.path.join(root, "css"))
        for name, text in [("index.html", "<p>home</p>\n"), ("css/s.css", "a{}\n")]:
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(root, name), 0o644)
        os.chmod(os.path.join(root, "css"), 0o711)
        os.chmod(root, 0o711)
        s = serve("--check-static", root, "--static-map", f"/st={root}", "--static-index", "index.html",
                  "--uid", "nobody", "--gid", "nogroup")
        assert get(s.url, "/").text == "<p>home</p>\n"
        assert get(s.url, "/st/").text == "<p>home</p>\n"
        assert get(s.url, "/css/s.css").text == "a{}\n"
        assert get(s.url, "/st").status_code == 301
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_a_static_directory_the_user_may_not_reach_is_named_as_such(serve):
    """A directory that is there, under one the --uid user may not enter:
    the warning says so and its files are 403 (it said the directory did
    not exist and that the mount passed to the app)."""
    import tempfile
    base = tempfile.mkdtemp(prefix="oxgate-700-")
    try:
        os.makedirs(os.path.join(base, "priv", "pub"))
        with open(os.path.join(base, "priv", "pub", "f.txt"), "w") as f:
            f.write("hidden\n")
        os.chmod(base, 0o755)
        os.chmod(os.path.join(base, "priv"), 0o700)
        s = serve("--static-map", f"/p={base}/priv/pub", "--uid", "nobody", "--gid", "nogroup")
        assert get(s.url, "/p/f.txt").status_code == 403
        s.wait_log(f"static directory {base}/priv/pub: Permission denied")
        assert "does not exist" not in s.log()
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_a_403_for_a_file_that_is_there_says_why_in_the_log(serve):
    """A link out of the root and a file --uid's user may not read: each
    403 says why, with the path, as nginx logs the open() it refused and
    uWSGI a link out of the root. A bare 403 left whoever deployed the
    files guessing."""
    import tempfile
    base = tempfile.mkdtemp(prefix="oxgate-403-")
    try:
        root = os.path.join(base, "root")
        os.makedirs(root)
        for name, mode in [("secret.txt", 0o644), (os.path.join("root", "private.txt"), 0o600),
                           (os.path.join("root", "public.txt"), 0o644)]:
            with open(os.path.join(base, name), "w") as f:
                f.write("x\n")
            os.chmod(os.path.join(base, name), mode)
        os.symlink(os.path.join(base, "secret.txt"), os.path.join(root, "link-out.txt"))
        os.chmod(base, 0o755)
        s = serve("--static-map", f"/p={root}", "--uid", "nobody", "--gid", "nogroup")
        assert get(s.url, "/p/public.txt").status_code == 200
        assert get(s.url, "/p/link-out.txt").status_code == 403
        assert get(s.url, "/p/private.txt").status_code == 403
        s.wait_log(f"{root}/link-out.txt: a link out of the directory it is served from; answered 403")
        s.wait_log(f"{root}/private.txt: cannot be opened: Permission denied; answered 403")
        assert "public.txt: " not in s.log()
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("program", ["oxgate", "uwsgi"])
def test_with_manage_script_name_the_maps_see_the_path_under_the_mount_as_uwsgi(serve, tree, program):
    """uWSGI strips the mount point for --manage-script-name before its
    static maps look: an app under /app keeps its /static map for
    /app/static/... (oxgate sent it to the app), and a map naming the
    mount does not match."""
    command = (BIN,) if program == "oxgate" else (str(VENV / "bin" / "uwsgi"),)
    expires = ("--static-expires-path-info", r"^/static/.*\.txt$ 50") if program == "oxgate" else ()
    s = serve("--mount", f"/app={ECHO}", "--manage-script-name", "--static-map", f"/static={tree}",
              "--static-map", f"/app/s={tree}", "--master", *expires, program=command)
    r = get(s.url, "/app/static/hello.txt")
    assert (r.status_code, r.text) == (200, "hello static\n"), program
    if expires:
        # A -path-info rule matches PATH_INFO as the maps see it (it
        # matched the path with /app, unlike the docs' example).
        assert r.headers.get("cache-control") == "max-age=50", r.headers
    r = get(s.url, "/app/s/hello.txt")
    assert r.headers["content-type"].startswith("application/json") and r.json()["path"] == "/s/hello.txt", program
    assert get(s.url, "/static/hello.txt").text == "hello static\n", program


@pytest.mark.parametrize("program", ["oxgate", "uwsgi"])
def test_check_static_is_looked_in_before_the_maps_as_uwsgi(serve, tree, tmp_path, program):
    """A file at the same URL under a --check-static directory and a
    --static-map is the check directory's, as uWSGI looks (oxgate served
    the map's)."""
    mapped = tmp_path / "mapped"
    (mapped / "sub").mkdir(parents=True)
    (mapped / "sub" / "index.html").write_text("<p>mapped</p>\n")
    (mapped / "hello.txt").write_text("mapped hello\n")
    command = (BIN,) if program == "oxgate" else (str(VENV / "bin" / "uwsgi"),)
    s = serve("--wsgi-file", ECHO, "--static-map", f"/={mapped}", "--check-static", str(tree),
              "--static-index", "index.html", "--master", program=command)
    assert get(s.url, "/hello.txt").text == "hello static\n", program
    assert get(s.url, "/sub/").text == "<p>index</p>\n", program

def test_a_large_body_sent_with_a_get_for_a_file_does_not_reset_the_answer(serve, tree):
    """A GET with a body (30 MB) to a static file: the body is never read,
    and the connection ended while the client still sent it, which the
    kernel answered with a reset (the client got a broken pipe, not the
    file). The close lingers, as for a 413."""
    s = serve("--static-map", f"/static={tree}", "--processes", "1")
    body = b"x" * 30_000_000
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
        c.sendall(b"GET /static/hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        out = b""
        while chunk := c.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"hello static\n"), out[:200]


def test_a_post_under_check_static_is_the_apps(serve, tree):
    """--check-static shares the app's URLs: a POST to a path with a file
    behind it reaches the app, as in uWSGI (under a mount: 405)."""
    s = serve("--check-static", str(tree), "--wsgi-file", ECHO)
    r = requests.post(s.url + "/hello.txt", data=b"a=1", timeout=10)
    assert r.status_code == 200 and r.json()["path"] == "/hello.txt"
    assert get(s.url, "/hello.txt").text == "hello static\n"


def test_check_static_leaves_a_post_to_a_directory_and_a_forbidden_file_to_the_app(serve, tree):
    """Under --check-static, a POST to a directory without its slash
    reaches the app (a 301 would lose the form: a browser follows it with
    a GET), and so does a path whose file may not be served: a link out of
    the directory, a FIFO; as in uWSGI. A GET is still redirected."""
    os.mkfifo(tree / "pipe")
    s = serve("--check-static", str(tree), "--static-index", "index.html", "--wsgi-file", ECHO)
    r = requests.post(s.url + "/sub", data=b"name=x", allow_redirects=False, timeout=10)
    assert r.status_code == 200 and r.json()["path"] == "/sub", r.text[:200]
    for path in ("/link-out.txt", "/pipe"):
        r = get(s.url, path)
        assert r.status_code == 200 and r.json()["path"] == path, (path, r.status_code, r.text[:200])
    s.wait_log(f"{tree.resolve()}/pipe: not a regular file; left to the app")
    r = requests.get(s.url + "/sub", allow_redirects=False, timeout=10)
    assert (r.status_code, r.headers["location"]) == (301, "/sub/")


def test_directory_redirects_stay_on_this_host_and_under_the_root_path(serve, tree):
    """`//sub` is redirected to `/sub/`, never to `//sub/` (the host
    "sub" to a browser); behind a prefix the Location keeps it."""
    s = serve("--check-static", str(tree), "--static-index", "index.html", "--wsgi-file", ECHO)
    host, port = s.url.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "//sub")
    r = c.getresponse()
    r.read()
    assert (r.status, r.getheader("location")) == (301, "/sub/")
    s = serve("--static-map", f"/static={tree}", "--static-index", "index.html", "--root-path", "/app",
              "--wsgi-file", ECHO)
    r = get(s.url, "/static/sub?x=1")
    assert (r.status_code, r.headers["location"]) == (301, "/app/static/sub/?x=1")
    # A web server that sends SCRIPT_NAME and the whole path in PATH_INFO
    # (uWSGI's modifier1 0): the prefix once.
    port = free_port()
    serve("--uwsgi-socket", f"127.0.0.1:{port}", "--static-map", f"/app/static={tree}", "--static-index",
          "index.html", "--wsgi-file", ECHO, socket_arg=False, wait=False)
    wait_for(lambda: listens(port), what="the uwsgi socket")
    out = uwsgi_request(port, packet([("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/app"),
                                      ("PATH_INFO", "/app/static/sub"), ("SERVER_NAME", "x"), ("SERVER_PORT", "80"),
                                      ("SERVER_PROTOCOL", "HTTP/1.1")]))
    assert b"\r\nLocation: /app/static/sub/\r\n" in out, out[:300]


def test_the_longest_mount_wins(serve, tree, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "hello.txt").write_text("from the longer mount\n")
    s = serve("--static-map", f"/static={tree}", "--static-map", f"/static/sub={other}", "--wsgi-file", ECHO)
    assert get(s.url, "/static/sub/hello.txt").text == "from the longer mount\n"
    assert get(s.url, "/static/hello.txt").text == "hello static\n"


def test_bad_static_options_are_explained(tmp_path):
    from helpers import run_fail
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--static-map", "static", "--wsgi-file", ECHO)
    assert code == 2 and "expected MOUNT=DIR" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--static-map", "static=/x", "--wsgi-file", ECHO)
    assert code == 2 and "starting with /" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--static-expires", "*.png soon", "--wsgi-file", ECHO)
    assert code == 2 and "--static-expires" in err and "seconds" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--static-expires-uri", "([ 60", "--wsgi-file", ECHO)
    assert code == 2 and "--static-expires-uri" in err and "regex" in err.lower()
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--static-map", f"/s={tmp_path}", "--mimefile",
                         str(tmp_path / "none"), "--wsgi-file", ECHO)
    assert code != 0 and "--mimefile" in err


def test_django_collectstatic_output_beside_the_app(serve, tmp_path):
    root = tmp_path / "collected"
    (tmp_path / "djstatic.py").write_text(
        "from djproj.settings import *\n"
        "INSTALLED_APPS = ['django.contrib.contenttypes', 'django.contrib.auth', 'django.contrib.admin',\n"
        "                  'django.contrib.staticfiles']\n"
        f"STATIC_URL = '/static/'\nSTATIC_ROOT = {str(root)!r}\n")
    env = {**os.environ, "PYTHONPATH": f"{APPS}:{tmp_path}", "DJANGO_SETTINGS_MODULE": "djstatic"}
    subprocess.run([sys.executable, "-m", "django", "collectstatic", "--noinput", "-v0"], env=env, check=True,
                   timeout=120)
    css = root / "admin" / "css" / "base.css"
    assert css.exists()
    s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", "djproj.wsgi", "--static-map",
              f"/static={root}", env={"DJANGO_SETTINGS_MODULE": "djstatic", "PYTHONPATH": str(tmp_path)})
    r = get(s.url, "/static/admin/css/base.css")
    assert r.status_code == 200 and r.content == css.read_bytes()
    assert r.headers["content-type"] == "text/css; charset=utf-8"
    assert get(s.url, "/").text == "Hello from Django"


def raw_get(url, path, headers):
    """GET without any decoding of the body (requests would gunzip it)."""
    host, port = url.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


BROTLI_STATIC = "/usr/lib/nginx/modules/ngx_http_brotli_static_module.so"


@pytest.mark.skipif(not os.path.exists(BROTLI_STATIC),
                    reason="needs nginx's brotli_static (scripts/test.sh installs it)")
def test_precompressed_files_as_nginx_gzip_static_and_brotli_static(serve, tree, tmp_path):
    import gzip
    css = (tree / "style.css").read_bytes()
    (tree / "style.css.gz").write_bytes(gzip.compress(css))
    (tree / "style.css.br").write_bytes(b"pretend brotli bytes")
    s = serve("--static-map", f"/static={tree}", "--static-gzip-all", "--wsgi-file", ECHO)
    with nginx_serving(tmp_path, f"location /static/ {{ alias {tree}/; }}",
                       http="include /etc/nginx/mime.types; charset utf-8; charset_types text/css;"
                            " gzip_static on; gzip_vary on; brotli_static on;",
                       main=f"load_module {BROTLI_STATIC};") as port:
        for accept in ("gzip", "gzip, deflate", "identity", "gzip;q=0", "br;q=0.5, gzip", "br", "gzip, br"):
            ours = raw_get(s.url, "/static/style.css", {"Accept-Encoding": accept})
            theirs = raw_get(f"http://127.0.0.1:{port}", "/static/style.css", {"Accept-Encoding": accept})
            if "br" in accept:
                assert ours[1]["content-encoding"] == "br" and ours[2] == b"pretend brotli bytes"
            for h in ("content-encoding", "vary", "content-type", "content-length"):
                assert ours[1].get(h) == theirs[1].get(h), (accept, h, ours[1], theirs[1])
            assert ours[2] == theirs[2], accept
        # Several ranges of it: the whole .gz (a multipart body cannot say
        # it is coded), as nginx sends it.
        for accept in ("gzip", "identity"):
            ranged = {"Accept-Encoding": accept, "Range": "bytes=0-1,5-6"}
            ours = raw_get(s.url, "/static/style.css", ranged)
            theirs = raw_get(f"http://127.0.0.1:{port}", "/static/style.css", ranged)
            assert ours[0] == theirs[0], (accept, ours, theirs)
            assert ours[1].get("content-encoding") == theirs[1].get("content-encoding"), accept
            if ours[0] == 200:
                assert ours[2] == theirs[2]
        # The .gz is its own representation: its own validator, and a 304 keeps Vary.
        status, headers, body = raw_get(s.url, "/static/style.css", {"Accept-Encoding": "gzip"})
        assert gzip.decompress(body) == css
        again = raw_get(s.url, "/static/style.css", {"Accept-Encoding": "gzip", "If-None-Match": headers["etag"]})
        assert again[0] == 304 and again[1]["vary"] == "Accept-Encoding"
        assert headers["etag"] != raw_get(s.url, "/static/style.css", {})[1]["etag"]


def test_gzip_dir_and_ext_limit_where_precompressed_files_are_used(serve, tree):
    import gzip
    for name in ("style.css", "hello.txt"):
        (tree / f"{name}.gz").write_bytes(gzip.compress((tree / name).read_bytes()))
    s = serve("--static-map", f"/static={tree}", "--static-gzip-ext", ".css", "--wsgi-file", ECHO)
    assert raw_get(s.url, "/static/style.css", {"Accept-Encoding": "gzip"})[1].get("content-encoding") == "gzip"
    assert "content-encoding" not in raw_get(s.url, "/static/hello.txt", {"Accept-Encoding": "gzip"})[1]
    (tree / "sub" / "index.html.gz").write_bytes(gzip.compress((tree / "sub" / "index.html").read_bytes()))
    s2 = serve("--static-map", f"/static={tree}", "--static-gzip-dir", str(tree / "sub"), "--wsgi-file", ECHO)
    assert "content-encoding" not in raw_get(s2.url, "/static/style.css", {"Accept-Encoding": "gzip"})[1]
    status, headers, body = raw_get(s2.url, "/static/sub/index.html", {"Accept-Encoding": "gzip"})
    assert headers.get("content-encoding") == "gzip" and gzip.decompress(body) == b"<p>index</p>\n"


def test_a_given_mimefile_sets_the_types_it_names(serve, tree, tmp_path):
    """--mimefile FILE: its types, for the extensions it lists; the built-in
    table for the rest."""
    types = tmp_path / "mime.types"
    types.write_text("# a comment\napplication/x-oxgate-test\toxt oxu\ntext/x-special   css\n")
    (tree / "a.oxt").write_text("x")
    s = serve("--static-map", f"/static={tree}", "--mimefile", str(types), "--wsgi-file", ECHO)
    assert requests.get(s.url + "/static/a.oxt", timeout=10).headers["content-type"] == "application/x-oxgate-test"
    assert requests.get(s.url + "/static/style.css", timeout=10).headers["content-type"].startswith("text/x-special")
    assert requests.get(s.url + "/static/page.html", timeout=10).headers["content-type"].startswith("text/html")


def test_the_etag_changes_with_the_files_size_and_time_not_its_inode(serve, tree):
    """As nginx's: a copy with its time kept (another host behind the
    balancer, a deploy's rename) has the same ETag, so revalidations and
    resumed downloads that land on it still match."""
    s = serve("--static-map", f"/static={tree}", "--wsgi-file", ECHO)

    def etag():
        return requests.get(s.url + "/static/hello.txt", timeout=10).headers["etag"]
    f = tree / "hello.txt"
    first = etag()
    assert etag() == first and not first.startswith("W/")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1))  # a nanosecond later
    second = etag()
    assert second != first
    f.write_text("hello static!\n")  # longer
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns - f.stat().st_mtime_ns % 10**9))
    third = etag()
    assert third not in (first, second)
    # replaced by a rename: same size and time, another inode
    stat = f.stat()
    (tree / "new.txt").write_text("hello static!\n")
    os.utime(tree / "new.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.rename(tree / "new.txt", f)
    assert f.stat().st_ino != stat.st_ino and etag() == third
    # Two versions dated before 1970 (an archive's dates, `touch -d`) are
    # not one: a client must not be told its copy of the other is current.
    os.utime(f, (0, -315_619_200))  # 1960
    old = etag()
    os.utime(f, (0, -315_532_800))  # a day later
    assert etag() != old


def test_expiry_and_immutable_caching(serve, tree):
    import email.utils
    import time
    (tree / "app.3f2a9c1b.css").write_text("hashed\n")
    (tree / "report.20231231.txt").write_text("dated, not hashed\n")
    s = serve("--static-map", f"/static={tree}", "--static-expires-type", "text/css=3600",
              "--static-expires", r".*\.png 86400", "--static-expires-uri", "^/static/page=60",
              "--static-immutable", "--wsgi-file", ECHO)

    def lifetime(path):
        h = get(s.url, path).headers
        if "expires" in h:
            left = email.utils.parsedate_to_datetime(h["expires"]).timestamp() - time.time()
            return h["cache-control"], round(left / 10) * 10
        return h.get("cache-control"), None
    assert lifetime("/static/style.css") == ("max-age=3600", 3600)
    assert lifetime("/static/pixel.png") == ("max-age=86400", 86400)
    assert lifetime("/static/page.html") == ("max-age=60", 60)
    assert lifetime("/static/hello.txt") == (None, None)
    assert lifetime("/static/app.3f2a9c1b.css") == ("public, max-age=31536000, immutable", None)
    assert lifetime("/static/report.20231231.txt") == (None, None)
    r = get(s.url, "/static/style.css")
    again = get(s.url, "/static/style.css", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == "max-age=3600"


def test_the_uwsgi_documentation_static_examples(serve, tmp_path):
    """The examples of uWSGI's "Serving static files with uWSGI" page, each
    option as written there, with its directories made under tmp_path."""
    import email.utils
    www = tmp_path / "www"
    for d in ("public", "static", "img", "img2", "img3", "site/docs", "outside"):
        (www / d).mkdir(parents=True)
    (www / "static" / "foo.png").write_bytes(b"png in static")
    (www / "img3" / "logo.png").write_bytes(b"logo in img3")
    (www / "site" / "docs" / "home.html").write_text("<p>home</p>")
    (www / "site" / "page.php").write_text("<?php echo 1; ?>")
    (www / "oldlogo.gif").write_bytes(b"GIF89a old")
    (www / "outside" / "shared.css").write_text("shared")
    os.symlink(www / "outside" / "shared.css", www / "img" / "shared.css")
    (www / "img" / "app.css").write_text("body {}\n" * 100)
    with open(www / "img" / "app.css.gz", "wb") as f:
        import gzip
        f.write(gzip.compress((www / "img" / "app.css").read_bytes()))
    old = time.time() - 1000
    for name in ("app.css", "app.css.gz"):
        os.utime(www / "img" / name, (old, old))
    s = serve("--wsgi-file", ECHO,
              # Mode 1: --check-static, several
              "--check-static", str(www / "public"), "--check-static", str(www / "static"),
              # Mode 3: mount points, one given several times, map2, a file
              "--static-map", f"/images={www / 'img'}", "--static-map", f"/images={www / 'img2'}",
              "--static-map", f"/images={www / 'img3'}",
              "--static-map2", f"/docs={www / 'site'}",
              "--static-map", f"/images/logo.gif={www / 'oldlogo.gif'}",
              "--static-map", f"/site={www / 'site'}",
              # the index, skipped extensions
              "--static-index", "index.html", "--static-index", "index.htm", "--static-index", "home.html",
              "--static-skip-ext", ".php", "--static-skip-ext", ".cgi", "--static-skip-ext", ".php4",
              # Expires
              "--static-expires-type", "text/html=3600",
              "--static-expires-type-mtime", "text/css=3600",
              "--static-expires", r"/var/www/static/foo*\.jpg 3600",
              "--static-expires-path-info", r"^/images/logo\.png 60",
              # precompressed files (the regex form and the prefix and suffix names)
              "--static-gzip", r"/img/.*\.css$", "--static-gzip-prefix", str(www / "nowhere"),
              "--static-gzip-suffix", ".nothing",
              # links out of the root
              "--static-safe", str(www / "outside"))

    def body(path, **kw):
        r = requests.get(s.url + path, timeout=10, **kw)
        return r.status_code, r.content
    assert body("/foo.png") == (200, b"png in static")  # the second --check-static
    assert json.loads(body("/bar.png")[1])["path"] == "/bar.png"  # nowhere: the app
    assert body("/images/logo.png") == (200, b"logo in img3")  # the third /images
    assert body("/docs/home.html") == (200, b"<p>home</p>")  # map2 keeps the mount
    assert body("/images/logo.gif") == (200, b"GIF89a old")  # a file mapped
    assert json.loads(body("/images/logo.gif/x")[1])["path"] == "/images/logo.gif/x"
    assert body("/site/docs/") == (200, b"<p>home</p>")  # the third index name
    assert json.loads(body("/site/page.php")[1])["path"] == "/site/page.php"  # skipped: the app
    assert body("/images/shared.css") == (200, b"shared")  # a link to a --static-safe directory

    def expires_in(path):
        r = requests.get(s.url + path, timeout=10)
        return r.headers.get("cache-control"), round(
            (email.utils.parsedate_to_datetime(r.headers["expires"]).timestamp() - time.time()) / 10) * 10
    assert expires_in("/site/docs/home.html") == ("max-age=3600", 3600)
    assert expires_in("/images/logo.png") == ("max-age=60", 60)  # by PATH_INFO
    # after the file's modification time, 1000 s ago
    r = requests.get(s.url + "/images/app.css", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert r.headers["content-encoding"] == "gzip" and r.text == "body {}\n" * 100
    expires = email.utils.parsedate_to_datetime(r.headers["expires"]).timestamp()
    assert abs(expires - (int(old) + 3600)) <= 1, r.headers
    assert abs(int(r.headers["cache-control"].split("=")[1]) - 2600) < 10, r.headers


def test_a_real_world_static_map_config_serves_its_files(serve, tmp_path):
    """tests/configs/real_world/static_map.ini as written, its /srv/site
    moved under tmp_path (and its port the test's): the mounts, the
    check-static directory, the skipped extension and the expiry."""
    import email.utils
    text = (ROOT / "tests/configs/real_world/static_map.ini").read_text()
    site = tmp_path / "srv" / "site"
    for d in ("static", "media", "public"):
        (site / d).mkdir(parents=True)
    (site / "static" / "app.css").write_text("body {}")
    (site / "media" / "photo.jpg").write_bytes(b"jpeg")
    (site / "public" / "robots.txt").write_text("User-agent: *")
    (site / "public" / "index.php").write_text("<?php ?>")
    # (the module renamed: Python's own `site` is imported first)
    (tmp_path / "mysite").mkdir()
    (tmp_path / "mysite" / "__init__.py").write_text("")
    (tmp_path / "mysite" / "wsgi.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'app: ' + environ['PATH_INFO'].encode()]\n")
    ini = tmp_path / "static_map.ini"
    ini.write_text(text.replace("/srv/site", str(site)).replace("http = :8000\n", "")
                   .replace("module = site.wsgi", "module = mysite.wsgi"))
    s = serve(str(ini), cwd=tmp_path)

    def get_(path):
        r = requests.get(s.url + path, timeout=10)
        return r.status_code, r.text
    assert get_("/static/app.css") == (200, "body {}")
    assert get_("/media/photo.jpg") == (200, "jpeg")
    assert get_("/robots.txt") == (200, "User-agent: *")  # check-static
    assert get_("/index.php") == (200, "app: /index.php")  # static-skip-ext
    assert get_("/") == (200, "app: /")
    r = requests.get(s.url + "/static/app.css", timeout=10)
    left = email.utils.parsedate_to_datetime(r.headers["expires"]).timestamp() - time.time()
    assert r.headers["cache-control"] == "max-age=7776000" and abs(left - 7776000) < 60


def test_check_static_docroot_serves_from_the_front_ends_document_root(serve, tmp_path):
    """--check-static-docroot: nginx's uwsgi_params send DOCUMENT_ROOT; a
    file there is served, anything else goes to the app."""
    root = tmp_path / "docroot"
    root.mkdir()
    (root / "robots.txt").write_text("User-agent: *\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    up = free_port()
    serve("--wsgi-file", ECHO, "--uwsgi-socket", f"127.0.0.1:{up}", "--check-static-docroot")
    location = f"root {root}; location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:{up}; }}"
    with nginx_serving(tmp_path, location) as port:
        r = requests.get(f"http://127.0.0.1:{port}/robots.txt", timeout=10)
        assert r.status_code == 200 and r.text == "User-agent: *\n"
        r = requests.get(f"http://127.0.0.1:{port}/app", timeout=10)
        assert r.json()["path"] == "/app"
    # The same over uwsgi directly: the variable decides. A `..` path no
    # file under the root could have is the app's, as every path there is.
    reply = uwsgi_request(up, cgi(path="/robots.txt", extra=[("DOCUMENT_ROOT", str(root))]))
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"User-agent: *\n")
    reply = uwsgi_request(up, cgi(path="/../secret.txt", extra=[("DOCUMENT_ROOT", str(root))]))
    assert b"outside the root" not in reply and b'"path": "/../secret.txt"' in reply


def test_lifetimes_past_any_http_date_are_clamped(serve, tree):
    """Expires past the year 9999 (an absurd lifetime) is said then, and a
    file dated before 1970 counts its -mtime lifetime from 1970: no panic,
    the file is served."""
    os.utime(tree / "hello.txt", (-100_000, -100_000))
    s = serve("--static-map", f"/static={tree}", "--static-expires-type", "text/css=99999999999999999",
              "--static-expires-type-mtime", "text/plain=10", "--wsgi-file", ECHO)
    r = requests.get(s.url + "/static/style.css", timeout=10)
    assert r.status_code == 200 and r.headers["expires"] == "Fri, 31 Dec 9999 23:59:59 GMT"
    r = requests.get(s.url + "/static/hello.txt", timeout=10)
    assert r.status_code == 200 and r.text == "hello static\n"
    assert r.headers["expires"] == "Thu, 01 Jan 1970 00:00:10 GMT" and r.headers["cache-control"] == "max-age=0"


def test_static_requests_are_logged_and_counted(serve, tree, tmp_path):
    import json
    import socket
    log = tmp_path / "app.log"
    stats = free_port()
    s = serve("--static-map", f"/static={tree}", "--wsgi-file", ECHO, "--processes", "1", "--logto", str(log),
              "--stats", f"127.0.0.1:{stats}")
    assert get(s.url, "/static/hello.txt").text == "hello static\n"
    assert get(s.url, "/static/hello.txt", "HEAD").status_code == 200
    assert get(s.url, "/app-path").ok
    text = wait_for(lambda: "GET /app-path" in log.read_text() and log.read_text(), what="the log lines")
    line = next(l for l in text.splitlines() if "GET /static/hello.txt" in l)
    assert "=> generated 13 bytes" in line and "(HTTP/1.1 200)" in line
    assert "HEAD /static/hello.txt => generated 0 bytes" in text

    def requests_counted():
        with socket.create_connection(("127.0.0.1", stats), timeout=5) as c:
            doc = json.loads(b"".join(iter(lambda: c.recv(65536), b"")))
        cores = [c for w in doc["workers"] for c in w["cores"]]
        return (sum(w["requests"] for w in doc["workers"]), sum(c["static_requests"] for c in cores))
    # uwsgitop's per-core static_requests: the two static ones of the three
    assert wait_for(lambda: requests_counted() == (3, 2), what="three requests, two static, in the stats")


def test_a_static_file_is_logged_once_sent_with_the_bytes_and_time_it_took(serve, tmp_path):
    """As nginx and uWSGI log a download: when it ends, with what went out.
    Before, the line was written as the response began, the file's whole
    length in 0 msecs, for a client that left as for one that took it all."""
    root = tmp_path / "files"
    root.mkdir()
    size = 64 << 20
    with open(root / "big.bin", "wb") as f:
        f.truncate(size)  # sparse
    log = tmp_path / "app.log"
    s = serve("--static-map", f"/static={root}", "--wsgi-file", ECHO, "--processes", "1", "--logto", str(log))

    def download(path, *, then_read, before_reading=None):
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            got = b""
            while b"\r\n\r\n" not in got:
                got += c.recv(65536)
            assert got.startswith(b"HTTP/1.1 200")
            if before_reading:
                before_reading()
            time.sleep(1.2)  # the server cannot be done: 64 MiB is far more than the sockets hold
            read = len(got.split(b"\r\n\r\n", 1)[1])
            while then_read and (chunk := c.recv(1 << 20)):
                read += len(chunk)
            return read

    def logged(path):
        line = wait_for(lambda: next((l for l in log.read_text().splitlines() if f"GET {path} " in l), None),
                        what=f"the log line of {path}")
        bytes_, msecs = map(int, re.search(r"generated (\d+) bytes in (\d+) msecs", line).groups())
        return bytes_, msecs

    # Taken whole, slowly: the whole length, and at least the time the client took.
    assert download("/static/big.bin", then_read=True) == size
    assert logged("/static/big.bin")[0] == size and logged("/static/big.bin")[1] >= 1000
    # A client that leaves after the head: what went out, far from the whole.
    (root / "left.bin").write_bytes(b"")
    with open(root / "left.bin", "wb") as f:
        f.truncate(size)
    download("/static/left.bin", then_read=False)
    sent, msecs = logged("/static/left.bin")
    assert sent < size // 2 and msecs >= 1000
    # A file that shrinks while it is sent: cut short, and logged so.
    with open(root / "shrinks.bin", "wb") as f:
        f.truncate(size)
    read = download("/static/shrinks.bin", then_read=True,
                    before_reading=lambda: os.truncate(root / "shrinks.bin", 1 << 20))
    assert read < size
    assert logged("/static/shrinks.bin")[0] < size


def test_a_gigabyte_file_to_a_slow_client_keeps_the_worker_small(serve, tmp_path):
    """sendfile from the page cache: a client that reads slowly holds the
    file open, not a copy of it, and the worker serves others meanwhile."""
    root = tmp_path / "files"
    root.mkdir()
    gib = 1 << 30
    with open(root / "huge.bin", "wb") as f:
        f.truncate(gib)  # sparse: all zeros, no disk
    s = serve("--static-map", f"/static={root}", "--wsgi-file", ECHO, "--processes", "1")
    assert requests.get(s.url + "/static/huge.bin", headers={"Range": "bytes=0-9"}).content == b"\0" * 10
    (worker,) = s.wait_workers(1)
    with open(f"/proc/{worker}/clear_refs", "w") as f:
        f.write("5")  # VmHWM starts again from VmRSS
    idle = s.rss_kb(pid=worker)
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        c.settimeout(30)
        c.connect(("127.0.0.1", s.port))
        c.sendall(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            got += c.recv(4096)
        head, body = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: 1073741824" in head.lower()
        read = len(body)
        # Slowly, for 2 s: 64 KiB every 20 ms.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            read += len(c.recv(64 << 10))
            time.sleep(0.02)
        assert read < gib // 8  # still far from done
        # The same worker answers another client meanwhile.
        assert requests.get(s.url + "/static/huge.bin", headers={"Range": "bytes=-5"}, timeout=10).status_code == 206
        grew_mb = (s.rss_kb("VmHWM", pid=worker) - idle) / 1024
        # Then the rest, fast: every byte arrives.
        while chunk := c.recv(1 << 20):
            read += len(chunk)
    assert read == gib
    print(f"1 GiB file to a slow client: peak RSS {grew_mb:.1f} MiB above idle")
    assert grew_mb < 5


def test_a_link_to_a_fifo_outside_the_root_is_refused_without_opening_it(serve, tree, tmp_path):
    """Looked at before it is opened: opening a FIFO for reading would wake
    its waiting writer (then kill it with SIGPIPE at the close), and a link
    to a device such as a watchdog would arm it."""
    fifo = tmp_path / "outside.fifo"
    os.mkfifo(fifo)
    (tree / "pipelink").symlink_to(fifo)
    writer = subprocess.Popen([sys.executable, "-c", f"import os; os.write(os.open({str(fifo)!r}, os.O_WRONLY), b'x')"])
    try:
        s = serve("--static-map", f"/static={tree}", "--wsgi-file", ECHO)
        assert get(s.url, "/static/pipelink").status_code == 403
        # Said, as nginx logs the open() it refused; a bare 403 left
        # whoever deployed the files guessing.
        wait_for(lambda: f"{tree.resolve()}/pipelink: not a regular file; answered 403" in s.log(), what="why")
        time.sleep(0.5)
        assert writer.poll() is None, "the writer was let through, so the FIFO was opened"
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.kill()
        writer.wait()
