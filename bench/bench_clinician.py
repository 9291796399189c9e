"""Clinician area and audit log: the cost of a login, of the audit chain, of a download.

Run: `python bench/bench_clinician.py [ROWS]` (default 20000). Prints the argon2 time of
one password check (what each login costs the server), the rate of appending audit rows,
the time of `audit verify` and of the retention purge over ROWS rows, and the Python
memory peak (tracemalloc) of streaming a 30 MB held ciphertext as .asc and as .eml
through the clinician views. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from formrelay.clinician.accounts import _hasher  # noqa: E402
from formrelay.config import parse_config  # noqa: E402
from formrelay.ops.audit import verify  # noqa: E402
from formrelay.services import build  # noqa: E402
from formrelay.store import Store  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def argon2_ms(n: int = 10) -> float:
    h = _hasher.hash("een lang wachtwoord")
    times = []
    for _ in range(n):
        t = time.perf_counter()
        _hasher.verify(h, "een lang wachtwoord")
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def audit_figures(tmp: Path, rows: int) -> None:
    clock = Clock()
    store = Store(tmp / "audit.db", clock)
    t = time.perf_counter()
    for i in range(rows):
        store.audit.append("downloaded", actor="user:anna", ip="192.0.2.1",
                           reference="FR-2345-6789",
                    form_id="intake", detail=f"asc via web {i}")
        if i == rows // 2:
            clock.now += timedelta(days=6 * 365)
    append = time.perf_counter() - t
    t = time.perf_counter()
    result = verify(store)
    check = time.perf_counter() - t
    t = time.perf_counter()
    purged = store.audit.purge(clock.now - timedelta(days=5 * 365))[0]
    purge = time.perf_counter() - t
    print(f"audit: {rows} rows appended at {rows / append:,.0f} rows/s (one transaction each)")
    print(f"audit verify over {result.rows} rows: {check * 1000:.0f} ms "
          f"({'ok' if result.ok else 'PROBLEMS'})")
    print(f"retention purge of {purged} rows: {purge * 1000:.0f} ms; verify after: "
          f"{'ok' if verify(store).ok else 'PROBLEMS'}")
    size = (tmp / "audit.db").stat().st_size
    print(f"database size with {rows} rows: {size / 1024 / 1024:.1f} MB")


def download_figures(tmp: Path) -> None:
    raw = {"server": {"practice_name": "P", "practice_phone": "1", "data_dir": str(tmp)},
           "smtp": {"sink_dir": str(tmp), "from_address": "a@b.nl"},
           "recipients": {"r": {"email": "r@b.nl", "key_file": "x.asc",
                                "fingerprint": "A" * 40}},
           "forms": {"intake": {"title": "T", "recipients": ["r"], "delivery": "hold",
                                "fields": [{"name": "n", "type": "text", "label": "N"}]}}}
    settings = parse_config(raw, tmp / "config.toml", {"FORMRELAY_SECRET_KEY": "s" * 40})
    services = build(settings)
    store, accounts, inbox = services.store, services.accounts, services.inbox
    user = accounts.add("anna", "een lang wachtwoord", recipients=["r"])
    ct = tmp / "ct.asc"
    line = b"hF4D" + b"A" * 60 + b"\n"
    with ct.open("wb") as fh:
        fh.write(b"-----BEGIN PGP MESSAGE-----\n\n")
        for _ in range(30 * 1024 * 1024 // len(line)):
            fh.write(line)
        fh.write(b"-----END PGP MESSAGE-----\n")
    store.submissions.add({"reference": "FR-2345-6789", "form_id": "intake",
                           "received_at": "2026-01-01T00:00:00.000000Z", "delivery": "hold",
                           "status": "held", "file_count": 0}, ct)
    item = inbox.get(user, "FR-2345-6789", action="downloaded", ip="")
    for fmt in ("asc", "eml"):
        tracemalloc.start()
        t = time.perf_counter()
        total = 0
        if fmt == "asc":
            for chunk in inbox.asc_chunks(item):
                total += len(chunk)
        else:
            with open(os.devnull, "wb") as sink:
                inbox.eml(item, user).write(sink)
            total = item.size
        seconds = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"download .{fmt} of {total / 1024 / 1024:.0f} MB: {seconds * 1000:.0f} ms, "
              f"Python memory peak {peak / 1024 / 1024:.1f} MB")


def main(rows: int) -> None:
    print(f"argon2id password check (one login): {argon2_ms():.0f} ms median")
    with tempfile.TemporaryDirectory() as tmp:
        audit_figures(Path(tmp), rows)
        download_figures(Path(tmp))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
