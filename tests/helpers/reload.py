"""`formrelay serve` on a config that reloads, and a wait until every worker shows a
change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..conftest import ENV, make_config_dict, write_config
from ..keys import TestKey
from .servers import _wait


def _config(tmp_path: Path, keys: dict[str, TestKey], base: str = "http://localhost",
            **practices: Any) -> Path:
    cfg = make_config_dict(tmp_path / "data", keys, fields=[
        {"name": "name", "type": "text", "label": "Naam", "required": True},
        {"name": "complaint", "type": "textarea", "label": "Klacht", "required": True}],
        server={"base_url": base, "reload_seconds": 1})
    if practices:
        cfg["practices"] = practices
    return write_config(tmp_path / "config.toml", cfg)


@contextmanager
def serving(tmp_path: Path, config: Path, port: int) -> Iterator[tuple[subprocess.Popen[bytes],
                                                                         Path]]:
    """`formrelay serve` with two workers on 127.0.0.1:port; yields the process and log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMRELAY_")}
    env.update(ENV)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "formrelay", "--config", str(config),
                                 "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def until(check: Callable[[], bool], what: str, log: Path, seconds: float = 30) -> None:
    """Wait until `check()` holds several times in a row (each worker answered)."""
    end, streak = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        streak = streak + 1 if check() else 0
        if streak >= 8:
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen:\n{log.read_text()[-3000:]}")
