#!/usr/bin/env python3
"""Idle keep-alive connections beside busy ones (issue #20).

Starts the server command (pinned to CPU 0), measures the RSS of its
worker, then opens IDLE keep-alive connections that each make one request
and stay open. It reports the worker's RSS per idle connection (before any
request, and after one), and wrk -c50's requests/s and p99 (on CPU 1) with
the idle connections held against the same run without them, alternating.

    bench/idle_connections.py [--idle 10000] [--reps 3] [--seconds 8] -- CMD...

CMD serves HTTP/1.1 on 127.0.0.1:{port} with one worker; {port} is
replaced. By default, oxgate's release build with examples/hello.py.
"""
import argparse
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1])


def worker_of(pid):
    """The worker: the one child of a master, or the process itself."""
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        kids = []
    return int(kids[0]) if len(kids) == 1 else pid


def wrk(port, conns, seconds):
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
         f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--busy", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--settle", type=float, default=4.0,
                    help="seconds idle before the RSS is read again")
    ap.add_argument("cmd", nargs="*")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.idle + 1000:
        sys.exit(f"the open-files limit ({hard}) is too low for {args.idle} connections")
    port = free_port()
    cmd = args.cmd or [os.path.join(ROOT, "target/release/oxgate"), "--http-socket",
                       "127.0.0.1:{port}", "--wsgi-file", os.path.join(ROOT, "examples/hello.py"),
                       "--processes", "1", "--disable-logging", "--listen", "4096"]
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    server = subprocess.Popen(["taskset", "-c", "0", *cmd], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        worker = worker_of(server.pid)
        wrk(port, args.busy, 2)  # warm-up
        base = rss_kib(worker)
        idle = []
        for _ in range(args.idle):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(1)
        opened = rss_kib(worker)
        request = b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n"
        for c in idle:
            c.sendall(request)
        for c in idle:
            if not c.recv(4096).startswith(b"HTTP/1.1 200"):
                sys.exit("an idle connection's request failed")
        time.sleep(0.5)
        used = rss_kib(worker)
        # oxgate parks a connection idle for 1 to 2 s, and trims the heap
        # a second after.
        time.sleep(args.settle)
        settled = rss_kib(worker)
        print(f"worker RSS {base} KiB; per idle connection: {(opened - base) * 1024 / args.idle:.0f} B "
              f"opened, {(used - base) * 1024 / args.idle:.0f} B just after one request, "
              f"{(settled - base) * 1024 / args.idle:.0f} B {args.settle} s later")
        # Alternating: with the idle connections held, then without them.
        rows = {"with": [], "without": []}
        for _ in range(args.reps):
            rows["with"].append(wrk(port, args.busy, args.seconds))
            held, idle = idle, []
            for c in held:
                c.close()
            time.sleep(1)
            rows["without"].append(wrk(port, args.busy, args.seconds))
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.idle)]
            for c in idle:
                c.sendall(request)
            for c in idle:
                c.recv(4096)
            time.sleep(1)
        med = {k: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v))
               for k, v in rows.items()}
        print(f"{args.busy} busy connections, median of {args.reps}: "
              f"{med['with'][0]:.0f} req/s, p99 {med['with'][1]:.2f} ms with {args.idle} idle; "
              f"{med['without'][0]:.0f} req/s, p99 {med['without'][1]:.2f} ms without "
              f"(throughput kept: {med['with'][0] / med['without'][0]:.3f})")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
