"""`formrelay serve` with a low max_requests and practice files, and a wait until every
gunicorn worker has been replaced."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ..conftest import ENV, make_config_dict, write_config
from ..keys import TestKey
from .servers import _http, _wait

MAX_REQUESTS = 15  # a worker is recycled after this many requests


FIELDS = [{"name": "name", "type": "text", "label": "Naam", "required": True},
          {"name": "complaint", "type": "textarea", "label": "Klacht", "required": True}]


def practice(name: str, rid: str, key: TestKey, form_id: str, title: str = "Aanmelden"
             ) -> dict[str, Any]:
    return {"name": name, "phone": "050 111 1111",
            "recipients": {rid: {"email": f"{rid}@{form_id}.test",
                                 "key_file": str(key.public), "fingerprint": key.fingerprint}},
            "forms": {form_id: {"title": title, "recipients": [rid], "delivery": "hold",
                                "fields": FIELDS}}}


def configure(tmp_path: Path, keys: dict[str, TestKey], base: str, **practices: Any) -> Path:
    """config.toml (the default practice: alice, form intake) and one file per practice
    in practices/."""
    cfg = make_config_dict(tmp_path / "data", keys, fields=FIELDS, server={
        "base_url": base, "reload_seconds": 1, "practices_dir": "practices"})
    folder = tmp_path / "practices"
    folder.mkdir(exist_ok=True)
    for pid, table in practices.items():
        write_config(folder / f"{pid}.toml", table)
    return write_config(tmp_path / "config.toml", cfg)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMRELAY_")}
    return {**env, **ENV, **extra}


@contextmanager
def _running(cmd: list[str], tmp_path: Path, port: int, env: dict[str, str]
             ) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / f"server-{len(list(tmp_path.glob('server-*.log')))}.log"  # one per start
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def serve(tmp_path: Path, config: Path, port: int
          ) -> AbstractContextManager[tuple[subprocess.Popen[bytes], Path]]:
    """`formrelay serve` with two workers, recycled after MAX_REQUESTS requests (only
    that gunicorn option is changed, in the process that runs the command)."""
    code = ("import formrelay.ops.server as s\n"
            "shipped = s.gunicorn_options\n"
            "s.gunicorn_options = lambda **kw: {**shipped(**kw), "
            f"'max_requests': {MAX_REQUESTS}, 'max_requests_jitter': 0}}\n"
            "from formrelay.cli import cli\n"
            f"cli(['--config', {str(config)!r}, 'serve', '--bind', '127.0.0.1:{port}', "
            "'--workers', '2'])\n")
    return _running([sys.executable, "-c", code], tmp_path, port, _env())


def _workers(log: Path) -> set[str]:
    """The pids of the workers running now, from gunicorn's log."""
    exited = set(re.findall(r"Worker exiting \(pid: (\d+)\)", log.read_text(errors="replace")))
    return {pid for pid in _booted(log) if pid not in exited}


def _booted(log: Path) -> list[str]:
    return re.findall(r"Booting worker with pid: (\d+)", log.read_text(errors="replace"))


def recycle_every_worker(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Requests until every worker running now has been replaced, and two workers that
    started since are serving; the port answers each request."""
    old, before = _workers(log), len(_booted(log))
    # bounded in time, not in requests: a worker past max_requests finishes serving
    # until its main loop looks again (about once a second), so fast answers alone can
    # use up any request count before it is replaced
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _workers(log)
        if not old & now and len(now) == 2 and len(_booted(log)) - before >= 2:
            return
        status = _http(f"{base}/widget.js")[0]
        assert status == 200 and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.01)
    raise AssertionError(f"workers {old} were not recycled:\n{log.read_text()[-3000:]}")
