"""Shared pieces of the bench/ scripts (not a test; nothing here is timed by pytest).

A throw-away clinician key made with the real gpg, a temp config, an app under gunicorn
in a child process (`_serve.py`, same options as `formrelay serve`), a bounded load
generator in a separate process (`_loadgen.py`, 127.0.0.1 only), the memory figures of
a worker process from /proc, and a plain-text table.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
SECRET = "bench-secret-" + "b" * 40


def make_key(folder: Path, name: str = "clinician") -> tuple[str, Path]:
    """A fresh curve key (what `formrelay demo` and the tests use); returns its
    fingerprint and the exported public key file."""
    home = folder / f"{name}-home"
    home.mkdir(mode=0o700, parents=True)

    def gpg(*args: str) -> bytes:
        return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-random-seed-file",
                               "--pinentry-mode", "loopback", "--passphrase", "", *args],
                              check=True, capture_output=True, timeout=120).stdout

    gpg("--quick-gen-key", f"{name} <{name}@praktijk.test>", "future-default", "default", "2y")
    out = gpg("--with-colons", "--list-keys").decode()
    fpr = next(ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:"))
    pub = folder / f"{name}.asc"
    pub.write_bytes(gpg("--armor", "--export", fpr))
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                   capture_output=True, timeout=30)
    return fpr, pub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Server:
    """An app under gunicorn in a child process; `proc.pid` is the gunicorn master."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_server(kind: str, config: Path, log_dir: Path, *, workers: int, connections: int = 100,
                 port: int = 0, ready_path: str = "/healthz", timeout: float = 60,
                 max_requests: int | None = None, gthread: int = 0,
                 guard: bool = False) -> Server:
    """Start `_serve.py <kind>` (formrelay or plain) on `port` of 127.0.0.1 (default: a
    free one); wait until `ready_path` answers 200 and every worker is up. `max_requests`
    overrides gunicorn's worker recycling (0 = never). `guard`: keep the per-address
    connection limit (ops/gworker.py) on, for a bench of an attack from one address."""
    port = port or free_port()
    log = log_dir / f"{kind}-{port}.log"
    # the load generator plays many patients from one address: the per-address
    # connection guard (ops/gworker.py) would close all but 20 of its connections
    env = {**os.environ, "FORMRELAY_SECRET_KEY": SECRET, "PYTHONPATH": str(ROOT)}
    if not guard:
        env["FORMRELAY_CONNECTIONS_PER_ADDRESS"] = "0"
    with log.open("wb") as out:
        proc = subprocess.Popen([PY, str(BENCH / "_serve.py"), kind, str(config),
                                 "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                                 "--connections", str(connections),
                                 *([] if max_requests is None else
                                   ["--max-requests", str(max_requests)]),
                                 *(["--gthread", str(gthread)] if gthread else [])],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    server = Server(kind, proc, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            status, _ = http_get(port, ready_path, timeout=2)
            if status == 200 and len(server.worker_pids()) >= workers:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{kind} server not ready after {timeout}s; see {log}")


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (gunicorn workers of a master)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


def proc_status_kb(pid: int, key: str) -> int:
    """A memory figure from /proc/<pid>/status in KiB: VmHWM is the peak resident set."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def run_load(spec: dict[str, Any], timeout: float,
             on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run `_loadgen.py` in a separate process with `spec` (see that file); its hard
    limits are spec["duration"], spec["max_requests"] and this timeout. `on_start` is
    called when the load generator starts its clock (after any prefetching)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([PY, str(BENCH / "_loadgen.py")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            proc.stdin.write(json.dumps(spec).encode())
            proc.stdin.close()
            first = proc.stdout.readline()
            if first.strip() == b"go" and on_start:
                on_start()
            out = proc.stdout.read()
            proc.wait()
        finally:
            killer.cancel()
        if proc.returncode != 0 or first.strip() != b"go":
            err.seek(0)
            raise RuntimeError(f"load generator failed ({proc.returncode}): "
                               f"{err.read().decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


def tree_cpu_seconds(master: int) -> float:
    """CPU seconds used by a gunicorn master, its workers and everything they waited for
    (gpg): the `cutime` of a process holds its reaped children, so a worker recycled
    meanwhile is still counted, through the master."""
    total = 0.0
    for pid in [master, *children(master)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all CPUs, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def kill_agents(root: Path) -> None:
    """Stop the gpg-agents gpg started for homes under `root` (key import starts one)."""
    for home in {p.parent for p in root.rglob("pubring.kbx")} | \
            {p.parent for p in root.rglob("pubring.gpg")}:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                       capture_output=True, timeout=30, check=False)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def machine() -> str:
    gpg = subprocess.run(["gpg", "--version"], capture_output=True, timeout=30,
                         check=False).stdout.decode().splitlines()[0]
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {gpg}"
