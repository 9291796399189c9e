"""A real redis-server on 127.0.0.1 for the tests: started on a free loopback port in a
temp folder, with nothing saved to disk, stopped at the end. `stop()` and `start()` play
a Redis that goes away and comes back on the same port. Debian's `redis-server`
package (scripts/setup.sh --test) provides the binary.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def binary() -> str | None:
    return shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")


class RedisServer:
    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def start(self, *extra: str) -> None:
        exe = binary()
        assert exe, "redis-server not installed (scripts/setup.sh --test installs it)"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--protected-mode", "yes", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until it answers PING (bounded)
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer within 20 seconds")

    def answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """One command in RESP (FLUSHALL between tests, CONFIG SET ...); the raw reply."""
        body = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection((HOST, self.port), timeout=5) as s:
            s.sendall(body.encode())
            return s.recv(4096)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
