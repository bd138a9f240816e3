"""--threads: a worker's pool of Python threads serves other connections while one blocks."""
import concurrent.futures

import requests

from helpers import APPS, BEHAVIOUR


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
