"""Benchmark of slow clients (issue 10): how many normal requests are answered while a
handful of connections from one address trickle a body or send nothing.

    .venv/bin/python bench/bench_slow.py            # about 1 minute
    .venv/bin/python bench/bench_slow.py --quick    # about 30 seconds

It starts formrelay under gunicorn with the options of `formrelay serve` (gevent, 2
workers) and, for comparison, with the former gthread worker (2 workers x 4 threads).
For each it opens SLOW connections that send a POST's headers and then one byte of a
1 MB body a second, and IDLE connections that send nothing; meanwhile one client on
another address GETs `/f/<form_id>?embed=1` in a loop (each on a new connection, 5 s
timeout). It reports the GETs answered per second and how many timed out, with and
without the slow clients.

    .venv/bin/python bench/bench_slow.py --flood    # about 2 minutes (issue 16.7)

The flood runs only `formrelay serve`'s gunicorn (gevent, 2 workers x 100 connections)
against sockets from one address that are kept open (one closed by the server is opened
again at once): 200 idle, 1,000 idle, and 250 sending a POST's headers and then a byte of
the body a second. A probe on another address GETs the form page (a new connection each,
30 s timeout); it reports the page's p50 and p99 and how many GETs failed.
"""

from __future__ import annotations

import argparse
import http.client
import select
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    free_port,
    kill_agents,
    machine,
    make_key,
    percentile,
    start_server,
    table,
)
from bench.bench_widget import FORM, write_config

ATTACKER, PROBE = "127.0.0.5", "127.0.0.2"


def attack(port: int, slow: int, idle: int, stop: threading.Event, form: str = FORM) -> None:
    socks = []
    head = (f"POST /f/{form} HTTP/1.1\r\nHost: x\r\nContent-Type: "
            "application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\na=").encode()
    for i in range(slow + idle):
        s = socket.create_connection(("127.0.0.1", port), timeout=5,
                                     source_address=(ATTACKER, 0))
        if i < slow:
            s.send(head)
        socks.append(s)
        time.sleep(0.05)
    while not stop.wait(1.0):
        for s in socks[:slow]:
            try:
                s.send(b"x")
            except OSError:
                pass
    for s in socks:
        s.close()


def probe(port: int, seconds: float, form: str = FORM) -> tuple[int, int]:
    ok = failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                          source_address=(PROBE, 0))
        try:
            conn.request("GET", f"/f/{form}?embed=1")
            resp = conn.getresponse()
            resp.read()
            ok += resp.status == 200
        except (OSError, http.client.HTTPException):
            failed += 1
        finally:
            conn.close()
    return ok, failed


def hold(port: int, idle: int, slow: int, stop: threading.Event) -> None:
    """Keep `idle` silent and `slow` trickling sockets open from ATTACKER until `stop`:
    one the server closes (or refuses) is opened again."""
    head = (f"POST /f/{FORM} HTTP/1.1\r\nHost: x\r\nContent-Type: "
            "application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\na=").encode()
    socks: list[socket.socket | None] = [None] * (idle + slow)
    last_byte = 0.0
    while not stop.is_set():
        for i, s in enumerate(socks):
            if s is not None:
                readable, _, _ = select.select([s], [], [], 0)
                if not readable:
                    continue
                try:  # an answer (408) or end of file: the server let it go
                    s.recv(65536)
                except OSError:
                    pass
                s.close()
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5,
                                             source_address=(ATTACKER, 0))
                s.setblocking(False)
                if i >= idle:
                    s.send(head)
                socks[i] = s
            except OSError:
                socks[i] = None
        if time.monotonic() - last_byte >= 1.0:
            last_byte = time.monotonic()
            for s in socks[idle:]:
                try:
                    if s is not None:
                        s.send(b"x")
                except OSError:
                    pass
        stop.wait(0.05)
    for s in socks:
        if s is not None:
            s.close()


def timed_gets(port: int, seconds: float) -> tuple[list[float], int]:
    times: list[float] = []
    failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                          source_address=(PROBE, 0))
        try:
            conn.request("GET", f"/f/{FORM}?embed=1")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                times.append(time.perf_counter() - start)
            else:
                failed += 1
        except OSError:
            failed += 1
        finally:
            conn.close()
        time.sleep(0.05)
    return times, failed


def flood(seconds: float) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    print(f"formrelay idle/slow connection flood - {machine()}")
    print(f"sockets from one address kept open; {seconds:g} s of GET /f/{FORM}?embed=1 "
          "per run\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fr-bench-flood-") as tmp:
        root = Path(tmp)
        fpr, key = make_key(root)
        port = free_port()
        server = start_server("formrelay", write_config(root, port, fpr, key), root,
                              port=port, workers=2, guard=True)
        try:
            for label, idle, slow in (("nothing", 0, 0), ("200 idle sockets", 200, 0),
                                      ("1,000 idle sockets", 1000, 0),
                                      ("250 slow bodies", 0, 250)):
                stop = threading.Event()
                holder = threading.Thread(target=hold, args=(port, idle, slow, stop),
                                          daemon=True)
                holder.start()
                time.sleep(3 if idle or slow else 0)
                times, failed = timed_gets(port, seconds)
                stop.set()
                holder.join(timeout=60)
                ms = [t * 1000 for t in times] or [float("nan")]
                rows.append([label, len(times), f"{percentile(ms, 50):.0f}",
                             f"{percentile(ms, 99):.0f}", failed])
                time.sleep(1)
        finally:
            server.stop()
            kill_agents(root)
    print(table(["attack", "form GETs", "p50 ms", "p99 ms", "failed"], rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 s per run instead of 10")
    ap.add_argument("--flood", action="store_true",
                    help="200/1,000 idle sockets and 250 slow bodies, formrelay serve only")
    ap.add_argument("--slow", type=int, default=16, help="trickling connections (16)")
    ap.add_argument("--idle", type=int, default=8, help="silent connections (8)")
    args = ap.parse_args(argv)
    seconds = 5.0 if args.quick else 10.0
    if args.flood:
        return flood(seconds * 2)
    print(f"formrelay slow-client benchmark - {machine()}")
    print(f"{args.slow} trickling + {args.idle} idle connections from one address; "
          f"{seconds:g} s of GET /f/{FORM}?embed=1 per run\n")
    print(f"{'server':<28} {'slow clients':>12} {'answered/s':>11} {'timed out':>10}")
    with tempfile.TemporaryDirectory(prefix="fr-bench-slow-") as tmp:
        root = Path(tmp)
        fpr, key = make_key(root)
        try:
            for label, gthread in (("gevent (formrelay serve)", 0),
                                   ("gthread 2x4 (before)", 4)):
                port = free_port()
                cfg = write_config(root, port, fpr, key)
                server = start_server("formrelay", cfg, root, port=port, workers=2,
                                      gthread=gthread, guard=True)
                try:
                    for slow in (False, True):
                        stop = threading.Event()
                        attacker = threading.Thread(
                            target=attack, daemon=True,
                            args=(port, args.slow if slow else 0,
                                  args.idle if slow else 0, stop))
                        attacker.start()
                        time.sleep(2 if slow else 0)
                        ok, failed = probe(port, seconds)
                        stop.set()
                        attacker.join(timeout=30)
                        print(f"{label:<28} {'yes' if slow else 'no':>12} "
                              f"{ok / seconds:>11.1f} {failed:>10}")
                finally:
                    server.stop()
        finally:
            kill_agents(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
