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
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import free_port, kill_agents, machine, make_key, start_server
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 s per run instead of 10")
    ap.add_argument("--slow", type=int, default=16, help="trickling connections (16)")
    ap.add_argument("--idle", type=int, default=8, help="silent connections (8)")
    args = ap.parse_args(argv)
    seconds = 5.0 if args.quick else 10.0
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
                                      gthread=gthread)
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
