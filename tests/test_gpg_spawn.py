"""gpg under gevent (crypto/spawn.py): started without forking the worker in Python, its
pipes and exit cooperative, its time limit still in force."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .keys import TestKey, gpg_decrypt

SCRIPT = """\
from gevent import monkey
monkey.patch_all()
import io, os, sys, time
from pathlib import Path
import gevent
from formrelay.config import Recipient
from formrelay.crypto.keyring import GpgTimeout, Keyring

forks = []
os.register_at_fork(after_in_parent=lambda: forks.append(1))
root, key_file, fpr = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ring = Keyring(root / "gnupg", timeout=2)
dr = Recipient(id="dr", email="dr@praktijk.test", key_file=str(key_file), fingerprint=fpr)
assert ring.import_recipient(dr, key_file).usable
ticks = []

def ticker():  # runs while gpg works: nothing blocks the hub
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.005)

def encrypt(n):
    out = root / f"out{n}.asc"
    data = (f"antwoorden {n} " * 20000).encode()  # larger than a pipe's buffer
    ring.encrypt_stream(io.BytesIO(data), [fpr], out, compress=False)
    return out

tick = gevent.spawn(ticker)
jobs = [gevent.spawn(encrypt, n) for n in range(4)]
gevent.joinall(jobs, raise_error=True)
hung = root / "hung-gpg"
hung.write_text("#!/bin/sh\\nsleep 30\\n")
hung.chmod(0o755)
ring.gpg.gpgbinary = str(hung)
started = time.monotonic()
try:
    ring.encrypt_stream(io.BytesIO(b"x"), [fpr], root / "never.asc")
    print("no timeout")
except GpgTimeout:
    print("timeout", round(time.monotonic() - started))
tick.kill()
print("forks", len(forks), "ticks", len(ticks))
"""


def test_gpg_under_gevent_is_spawned_not_forked(tmp_path: Path,
                                                keys: dict[str, TestKey]) -> None:
    script = tmp_path / "spawn.py"
    script.write_text(SCRIPT, encoding="utf-8")
    key = keys["alice"]
    out = subprocess.run([sys.executable, str(script), str(tmp_path), str(key.public),
                          key.fingerprint], capture_output=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
    lines = out.stdout.decode().split("\n")
    assert lines[0] == "timeout 2"  # the hung gpg was stopped at its limit
    words = lines[1].split()
    assert words[:2] == ["forks", "0"]  # every gpg run spawned: the worker never forked
    assert int(words[3]) > 50  # other greenlets ran meanwhile
    for n in range(4):
        text = gpg_decrypt(key, (tmp_path / f"out{n}.asc").read_bytes())
        assert text.startswith(f"antwoorden {n} ".encode())
