"""A bounded HTTP load generator, run as its own process by the bench scripts.

It reads a JSON spec on stdin, runs `clients` threads, each with one keep-alive
connection to 127.0.0.1 (never anywhere else), posting multipart forms until
`duration` seconds or `max_requests` posts in total, and prints one JSON object:
`samples` = [[start offset s, latency s, HTTP status], ...] for the timed POSTs.

Like a browser, a client fetches the form (GET, not timed) and posts its hidden control
fields (`_token` etc.) with the answers; formrelay's form token is single-use, so every
post needs a form of its own. With "prefetch" = n, each client fetches n forms before
the clock starts (then the run measures the POSTs alone) and fetches more inline only
when it runs out (`inline_gets` counts those); with 0 it fetches the form before every
post, like a patient. It prints "go" when the clock starts (all clients ready), then
one JSON line; its `cpu` is this process's own CPU seconds since "go", so the caller
can tell how busy the rest of the machine was.

spec keys: port, path, clients, duration, max_requests, fields {name: value},
upload [field, filename, size] (a PDF-looking file of random bytes), fetch_form (False:
post without a form, e.g. the plain endpoint), prefetch, origin.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import secrets
import sys
import threading
import time
from typing import Any

HOST = "127.0.0.1"
HIDDEN = [re.compile(r'<input[^>]*type="hidden"[^>]*name="(_[a-z]+)"[^>]*value="([^"]*)"'),
          re.compile(r'<input[^>]*name="(_[a-z]+)"[^>]*type="hidden"[^>]*value="([^"]*)"')]


def multipart(fields: dict[str, str], upload: list[Any] | None, boundary: str) -> bytes:
    out = bytearray()
    for name, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n").encode()
    if upload:
        field, filename, size = upload
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{filename}"\r\nContent-Type: application/pdf\r\n\r\n').encode()
        out += b"%PDF-1.4\n" + os.urandom(size - 9) + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


class Client(threading.Thread):
    def __init__(self, spec: dict[str, Any], clock: dict[str, float], budget: list[int],
                 lock: threading.Lock, barrier: threading.Barrier):
        super().__init__(daemon=True)
        self.spec, self.clock = spec, clock
        self.budget, self.lock, self.barrier = budget, lock, barrier
        self.samples: list[tuple[float, float, int]] = []
        self.conn: http.client.HTTPConnection | None = None
        self.pool: list[dict[str, str]] = []
        self.inline_gets = 0
        self.resent = 0

    def connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.spec["port"], timeout=120)
        return self.conn

    def reset(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def hidden_fields(self) -> dict[str, str]:
        if not self.spec.get("fetch_form", True):
            return {}
        _, page = self.send("GET", self.spec["path"], None, {"Accept": "text/html"})
        html = page.decode("utf-8", "replace")
        return {k: v for rx in HIDDEN for k, v in rx.findall(html)}

    def take(self) -> bool:
        with self.lock:
            if self.budget[0] <= 0:
                return False
            self.budget[0] -= 1
            return True

    def run(self) -> None:
        spec = self.spec
        boundary = "bench" + secrets.token_hex(8)
        headers = {"Accept": "application/json", "Origin": spec["origin"],
                   "Content-Type": f"multipart/form-data; boundary={boundary}"}
        try:
            self.pool = [self.hidden_fields() for _ in range(int(spec.get("prefetch", 0)))]
        finally:
            self.reset()  # idle through the others' prefetch: the server closed it by now
            self.barrier.wait()
        t0 = self.clock["t0"]
        while time.monotonic() < self.clock["deadline"] and self.take():
            start = time.perf_counter()
            try:
                if self.pool:
                    hidden = self.pool.pop()
                else:
                    hidden = self.hidden_fields()
                    self.inline_gets += 1
                body = multipart({**hidden, **spec["fields"]}, spec.get("upload"), boundary)
                start = time.perf_counter()
                status, _ = self.send("POST", spec["path"], body, headers)
                self.samples.append((start - t0, time.perf_counter() - start, status))
            except (OSError, http.client.HTTPException):
                self.samples.append((start - t0, 0.0, 0))
                self.reset()
        self.reset()

    def send(self, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, bytes]:
        """One request on the kept-alive connection. If the server had closed it (idle
        timeout, a recycled worker) before answering anything, send once more on a new
        one, as browsers do; `resent` counts those."""
        for attempt in (1, 2):
            reused = self.conn is not None
            conn = self.connect()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.reset()
                if reused and attempt == 1:
                    self.resent += 1
                    continue
                raise
            data = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                self.reset()
            return resp.status, data
        raise AssertionError("unreachable")


def main() -> None:
    spec = json.load(sys.stdin)
    duration = float(spec["duration"])
    clock: dict[str, float] = {}

    def start_clock() -> None:  # run by the barrier once every client has prefetched
        clock["cpu0"] = own_cpu()
        print("go", flush=True)  # the caller starts its CPU counters now
        clock["t0"] = time.perf_counter()
        clock["deadline"] = time.monotonic() + duration

    n = int(spec["clients"])
    budget, lock = [int(spec["max_requests"])], threading.Lock()
    barrier = threading.Barrier(n, action=start_clock, timeout=600)
    clients = [Client(spec, clock, budget, lock, barrier) for _ in range(n)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=duration + 900)
    samples = [s for c in clients for s in c.samples]
    json.dump({"samples": samples, "elapsed": time.perf_counter() - clock["t0"],
               "inline_gets": sum(c.inline_gets for c in clients),
               "resent": sum(c.resent for c in clients),
               "cpu": own_cpu() - clock["cpu0"]}, sys.stdout)
    print(flush=True)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
