"""The plaintext canary: find a string anywhere it must not be.

A unique string is submitted, then searched for in files (database, WAL, data folder,
temp folder), captured logs and mails: as plain UTF-8, and as it would look inside
base64 (any alignment) or quoted-printable, so an unencrypted MIME part is caught too.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path


def needles(secret: str) -> list[bytes]:
    raw = secret.encode("utf-8")
    out = [raw, secret.encode("utf-16-le")]
    for pad in range(3):
        enc = base64.b64encode(b"\x00" * pad + raw)
        # drop the characters touched by the padding bytes and the unfinished tail
        start = (pad * 4 + 2) // 3 + (1 if pad else 0)
        middle = enc[start:len(enc) - 4]
        if len(middle) >= 8:
            out.append(middle)
    return out


def found_in(data: bytes, secret: str) -> bool:
    flat = data.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"=\r\n", b"")
    return any(n in data or n in flat for n in needles(secret))


def files_under(*roots: Path, since: float = 0.0) -> Iterable[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                p = Path(dirpath) / name
                try:
                    st = p.stat()
                except OSError:
                    continue
                if st.st_mtime >= since and st.st_size < 200 * 1024 * 1024:
                    yield p


def leaks(secret: str, *, roots: Iterable[Path] = (), texts: Iterable[str] = (),
          blobs: Iterable[bytes] = (), since: float = 0.0) -> list[str]:
    """Where `secret` was found, as a list of places (empty = nowhere)."""
    where: list[str] = []
    for p in files_under(*roots, since=since):
        try:
            if found_in(p.read_bytes(), secret):
                where.append(str(p))
        except OSError:
            continue
    for i, t in enumerate(texts):
        if found_in(t.encode("utf-8", "replace"), secret):
            where.append(f"text #{i}")
    for i, b in enumerate(blobs):
        if found_in(b, secret):
            where.append(f"blob #{i}")
    return where


def temp_root() -> Path:
    return Path(tempfile.gettempdir())


def start_clock() -> float:
    return time.time() - 1


def leaks_of(secrets: Iterable[str], *, roots: Iterable[Path] = (), texts: Iterable[str] = (),
             blobs: Iterable[bytes] = (), since: float = 0.0) -> dict[str, list[str]]:
    """`leaks` for several secrets at once, each file read once; only secrets found."""
    wanted = list(secrets)
    where: dict[str, list[str]] = {}

    def look(data: bytes, place: str) -> None:
        for s in wanted:
            if found_in(data, s):
                where.setdefault(s, []).append(place)

    for p in files_under(*roots, since=since):
        try:
            look(p.read_bytes(), str(p))
        except OSError:
            continue
    for i, t in enumerate(texts):
        look(t.encode("utf-8", "replace"), f"text #{i}: {t[:200]!r}")
    for i, b in enumerate(blobs):
        look(b, f"blob #{i}")
    return where
