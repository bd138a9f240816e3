"""--threads, and streaming a gigabyte each way in bounded memory."""
import concurrent.futures
import socket

import requests

from conftest import APPS

BEHAVIOUR = str(APPS / "behaviour.py")


def test_threads_serve_other_connections_while_one_blocks(serve):
    # One process: /block and /release must meet in the same one.
    s = serve("--wsgi-file", BEHAVIOUR, "--threads", "4", "--processes", "1")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        blocked = pool.submit(requests.get, s.url + "/block?timeout=30", timeout=60)
        # /block holds one Python thread until /release runs on another one;
        # with a single thread this would wait for /block's timeout.
        for _ in range(5):
            assert requests.get(s.url + "/thread", timeout=60).status_code == 200
        assert requests.get(s.url + "/release", timeout=60).text == "ok"
        assert blocked.result().text == "released"


def test_multithread_flag(serve):
    s = serve("--wsgi-file", str(APPS / "validated.py"), "--threads", "3")
    assert requests.get(s.url + "/env").json()["wsgi.multithread"] is True


GIB = 1 << 30


def test_gigabyte_response_in_bounded_memory(serve):
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1")
    requests.get(s.url + "/big?mb=4").content  # warm up
    (worker,) = s.wait_workers(1)
    idle = s.rss_kb(pid=worker)
    total = 0
    with requests.get(s.url + "/big?mb=1024", stream=True) as r:
        for chunk in r.iter_content(1 << 20):
            total += len(chunk)
    assert total == GIB
    grew_mb = (s.rss_kb("VmHWM", pid=worker) - idle) / 1024
    print(f"1 GiB response: peak RSS {grew_mb:.1f} MiB above idle")
    assert grew_mb < 100


def test_gigabyte_upload_in_bounded_memory(serve):
    s = serve("--wsgi-file", str(APPS / "validated.py"), "--processes", "1")
    requests.post(s.url + "/count", data=b"x" * 1000000)  # warm up
    (worker,) = s.wait_workers(1)
    idle = s.rss_kb(pid=worker)
    block = b"u" * (1 << 20)
    with socket.create_connection(("127.0.0.1", s.port), timeout=60) as c:
        c.sendall(f"POST /count?chunk=65536 HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n"
                  "Connection: close\r\n\r\n".encode())
        for _ in range(1024):
            c.sendall(block)
        out = b""
        while chunk := c.recv(65536):
            out += chunk
    assert f'"bytes": {GIB}'.encode() in out, out[-300:]
    grew_mb = (s.rss_kb("VmHWM", pid=worker) - idle) / 1024
    print(f"1 GiB upload: peak RSS {grew_mb:.1f} MiB above idle")
    assert grew_mb < 100
