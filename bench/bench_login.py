"""Benchmark of password guessing against a patient's form page (issue 16.6): how fast
the form answers while many bad logins arrive at once.

    .venv/bin/python bench/bench_login.py            # about 1 minute
    .venv/bin/python bench/bench_login.py --quick    # about 30 seconds

It starts formrelay under gunicorn with the options of `formrelay serve` (gevent, 2
workers), behind one trusted proxy (the client address comes from X-Forwarded-For),
and GETs `/f/<form_id>?embed=1` in a loop from one address (a new connection each,
50 ms apart) for each of three runs: nobody logging in; PARALLEL guessers each on a
/64 of its own (never paused: every guess is a real argon2 check, the worst case);
PARALLEL guessers rotating through the addresses of one /64 (paused after
login_max_failures_ip). It reports the form's p50/p95/p99 and how the logins were
answered (401 checked and wrong, 429 paused or busy).
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
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

PARALLEL = 32


def request(port: int, method: str, path: str, addr: str, body: str = "",
            headers: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body or None, headers={
            "X-Forwarded-For": addr, "X-Forwarded-Proto": "https", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()


def guesser(port: int, i: int, one_net: bool, stop: threading.Event,
            answers: Counter[int], lock: threading.Lock) -> None:
    n = 0
    while not stop.is_set():
        addr = f"2001:db8:99:1::{i * 1000 + n + 1:x}" if one_net else f"2001:db8:{i}:{n}::1"
        _, page, cookies = request(port, "GET", "/clinician/login", addr)
        cookie = "; ".join(c.split(";", 1)[0] for c in cookies)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        status, _, _ = request(
            port, "POST", "/clinician/login", addr,
            f"csrf_token={token[1] if token else ''}&username=guess{i}x{n}&password=wrong-one",
            {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        n += 1
        with lock:
            answers[status] += 1


def form_times(port: int, seconds: float) -> list[float]:
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        status, _, _ = request(port, "GET", f"/f/{FORM}?embed=1", "198.51.100.7")
        if status == 200:
            times.append(time.perf_counter() - start)
        time.sleep(0.05)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 s per run instead of 10")
    args = ap.parse_args(argv)
    seconds = 5.0 if args.quick else 10.0
    print(f"formrelay login-flood benchmark - {machine()}")
    print(f"GET /f/{FORM}?embed=1 for {seconds:g} s per run, {PARALLEL} guessers\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fr-bench-login-") as tmp:
        root = Path(tmp)
        fpr, key = make_key(root)
        port = free_port()
        cfg = write_config(root, port, fpr, key)
        cfg.write_text(cfg.read_text().replace(
            "[server]\n", "[server]\ntrusted_proxies = 1\nlogin_max_failures_ip = 20\n", 1))
        server = start_server("formrelay", cfg, root, port=port, workers=2)
        try:
            for label, guessers, one_net in (("nobody logging in", 0, False),
                                             (f"{PARALLEL} guessers, a /64 each", PARALLEL,
                                              False),
                                             (f"{PARALLEL} guessers in one /64", PARALLEL,
                                              True)):
                stop, lock, answers = threading.Event(), threading.Lock(), Counter[int]()
                with ThreadPoolExecutor(max(guessers, 1)) as pool:
                    running = [pool.submit(guesser, port, i, one_net, stop, answers, lock)
                               for i in range(guessers)]
                    time.sleep(1 if guessers else 0)
                    times = form_times(port, seconds)
                    stop.set()
                    for f in running:
                        f.result()
                ms = [t * 1000 for t in times]
                rows.append([label, len(ms), f"{percentile(ms, 50):.0f}",
                             f"{percentile(ms, 95):.0f}", f"{percentile(ms, 99):.0f}",
                             answers[401], answers[429]])
        finally:
            server.stop()
            kill_agents(root)
    print(table(["run", "form GETs", "p50 ms", "p95 ms", "p99 ms", "logins 401",
                 "logins 429"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
