"""--threads: a worker's pool of Python threads serves other connections while one blocks."""
import concurrent.futures
import time

import requests

from helpers import APPS, BEHAVIOUR, wait_for


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


THREAD_STATE_APP = '''
import contextvars, io, json, os, threading
local = threading.local()
made = []
request_var = contextvars.ContextVar("request_var", default="unset")
closes = []

class Closing(io.FileIO):
    """A file_wrapper response's file, with close() as Django's FileResponse
    has it: cleanup that expects the request's thread and context."""
    def close(self):
        if self.closed:
            return
        super().close()
        try:
            request_var.reset(self.token)
            error = None
        except Exception as e:
            error = repr(e)
        closes.append({"same_thread": threading.get_ident() == self.ident, "error": error})

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/file":
        f = Closing(__file__, "r")
        f.token, f.ident = request_var.set("req"), threading.get_ident()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/closes":
        body = json.dumps(closes).encode()
    else:
        if getattr(local, "mine", None) is None:
            local.mine = object()
            made.append(threading.get_ident())
        body = json.dumps({"made": len(made), "name": threading.current_thread().name}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''


def test_thread_local_data_lasts_from_one_request_to_the_next_on_a_thread(serve, tmp_path):
    """As under uWSGI's and Gunicorn's threads: Django's persistent database
    connections (CONN_MAX_AGE) live in threading.local(). Each request made
    and dropped its thread's Python state, and the data with it."""
    (tmp_path / "state.py").write_text(THREAD_STATE_APP)
    s = serve("--wsgi-file", str(tmp_path / "state.py"), "--threads", "2", "--processes", "1")
    seen = [requests.get(s.url + "/", timeout=10).json() for _ in range(12)]
    assert seen[-1]["made"] <= 2, seen
    # Named as the system names them, for %(threadName)s in log lines.
    assert {r["name"] for r in seen} <= {"oxgate-py-0", "oxgate-py-1"}, seen


def test_a_file_wrapper_close_runs_on_the_thread_and_in_the_context_of_its_call(serve, tmp_path):
    """close() of a wsgi.file_wrapper response (Django's FileResponse) runs
    after the file went out: on the thread the call ran on, as uWSGI and
    Gunicorn run it, not on whichever thread was free (where a ContextVar
    token from the call could not be reset)."""
    (tmp_path / "state.py").write_text(THREAD_STATE_APP)
    s = serve("--wsgi-file", str(tmp_path / "state.py"), "--threads", "4", "--processes", "1")
    for _ in range(6):
        requests.get(s.url + "/", timeout=10)  # each thread its local
        assert requests.get(s.url + "/file", timeout=10).text == THREAD_STATE_APP
    closes = wait_for(lambda: (c := requests.get(s.url + "/closes", timeout=10).json()) and len(c) == 6 and c,
                      what="the six close() calls")
    assert all(c["same_thread"] and c["error"] is None for c in closes), closes


def test_threads_the_system_refuses_leave_the_worker_serving_with_those_it_has(serve):
    """--limit-as too small for the stacks of --threads: the worker serves
    with the threads that started and says so (every request failed on a
    panic, and the worker stayed up serving nothing)."""
    s = serve("--wsgi-file", str(APPS / "validated.py"), "--threads", "1000", "--limit-as", "512",
              "--processes", "1")
    # While the threads start (on the first request), they take the
    # address space up to the limit: a connection taken meanwhile may find
    # none left for itself and be closed (seen once on a loaded machine).
    # The worker serves once they have.
    r = wait_for(lambda: _answer(s.url + "/env"), what="an answer")
    assert r.json()["wsgi.multithread"] is True
    s.wait_log("Python threads could start")
    # No request panics. A thread the system let start, with no room left
    # for the signal stack Rust's runtime gives each new thread, ends in
    # std's own panic before it runs anything (seen once on a loaded
    # machine): it is one of the threads that could not start.
    log = s.log()
    assert log.count("panicked") == log.count("failed to allocate an alternative stack"), log


def _answer(url):
    try:
        return requests.get(url, timeout=10)
    except requests.ConnectionError:
        return None


def test_a_worker_whose_threads_are_all_busy_leaves_new_connections_to_the_idle_one(serve):
    """As with uWSGI's threads, each accepting for itself: four slow
    requests on two workers of two threads run two in each, at once. A
    worker accepted whatever was waiting, and its requests waited for its
    threads while the other worker sat idle."""
    import collections
    s = serve("--wsgi-file", str(APPS / "procs.py"), "--processes", "2", "--threads", "2")
    s.wait_workers(2)

    def served_by(_):
        r = requests.get(s.url + "/sleep?1", headers={"Connection": "close"}, timeout=30)
        return r.text.split()[0]

    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            pids = collections.Counter(pool.map(served_by, range(4)))
        assert sorted(pids.values()) == [2, 2], pids



WAITING_APP = '''
import os, threading, time

def application(environ, start_response):
    marker = environ["QUERY_STRING"]
    open(f"{marker}.started.{os.getpid()}.{threading.get_ident()}", "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]
'''


def test_with_every_thread_busy_the_health_check_and_static_files_are_still_answered(serve, tmp_path):
    """A worker whose threads are all busy leaves new connections to idle
    workers, but when there is none it still takes them: what needs no
    Python thread (the health check a load balancer sends, a static file)
    is answered, not left in the backlog until a thread is free."""
    (tmp_path / "wait.py").write_text(WAITING_APP)
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "a.txt").write_text("static")
    marker = tmp_path / "go"
    s = serve("--wsgi-file", str(tmp_path / "wait.py"), "--processes", "1", "--threads", "2",
              "--health-path", "/healthz", "--static-map", f"/static={tmp_path / 'static'}")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(requests.get, f"{s.url}/?{marker}", timeout=60) for _ in range(2)]
        try:
            wait_for(lambda: len(list(tmp_path.glob("go.started.*"))) == 2, what="both threads busy")
            assert requests.get(s.url + "/healthz", timeout=10).status_code == 200
            assert requests.get(s.url + "/static/a.txt", timeout=10).text == "static"
            assert not any(w.done() for w in waiting)
        finally:
            marker.touch()
        assert [w.result().text for w in waiting] == ["done", "done"]


def test_a_worker_busy_for_long_still_leaves_each_new_connection_to_an_idle_one(serve, tmp_path):
    """Busy for longer than the 50 ms a connection is left to the others,
    a worker with no free thread still lets each new one go to a worker
    with one, rather than racing for it (and holding it behind its
    threads)."""
    (tmp_path / "wait.py").write_text(WAITING_APP)
    marker, now = tmp_path / "go", tmp_path / "now"
    now.touch()
    s = serve("--wsgi-file", str(tmp_path / "wait.py"), "--processes", "2", "--threads", "2")
    s.wait_workers(2)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        waiting = [pool.submit(requests.get, f"{s.url}/?{marker}", timeout=60) for _ in range(3)]
        try:
            # Three of four threads: one worker has none free.
            wait_for(lambda: len(list(tmp_path.glob("go.started.*"))) == 3, what="three threads busy")
            for _ in range(10):
                time.sleep(0.1)
                r = requests.get(f"{s.url}/?{now}", headers={"Connection": "close"}, timeout=5)
                assert r.text == "done"
        finally:
            marker.touch()
        assert [w.result().text for w in waiting] == ["done"] * 3


LOCKING_FILE_APP = '''
import threading
pool = threading.BoundedSemaphore(1)  # a pool of one database connection

def application(environ, start_response):
    if environ["PATH_INFO"] == "/file":
        pool.acquire()
        f = open(environ["QUERY_STRING"], "rb")
        closing = f.close
        def close():
            closing()
            pool.release()  # the connection goes back as the response ends
        f.close = close
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 65536)
    with pool:
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"db"]
'''


def test_a_file_responses_close_is_not_queued_behind_another_request_on_its_thread(serve, tmp_path):
    """Its thread stays with a file response until its close() has run,
    as uWSGI's and Gunicorn's do: took another request meanwhile, and that
    one waited for what the close() releases, the worker hung for good."""
    import socket
    (tmp_path / "locking.py").write_text(LOCKING_FILE_APP)
    (tmp_path / "big").write_bytes(bytes(48 << 20))  # more than the socket buffers take at once
    s = serve("--wsgi-file", str(tmp_path / "locking.py"), "--processes", "1", "--threads", "2")
    for _ in range(3):
        slow = socket.create_connection(("127.0.0.1", s.port), timeout=20)
        slow.sendall(f"GET /file?{tmp_path / 'big'} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        slow.recv(4096)  # the download has begun; the rest waits
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            db = pool.submit(requests.get, s.url + "/db", timeout=30)
            time.sleep(0.3)
            while slow.recv(1 << 16):  # the download ends: its close() gives the connection back
                pass
            slow.close()
            assert db.result().text == "db"
        assert requests.get(s.url + "/db", timeout=10).text == "db"
