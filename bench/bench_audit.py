"""Audit chain benchmark (not a test): what verifying the chain costs `formrelay check`.

    .venv/bin/python bench/bench_audit.py [--rows 20000] [--rows 200000]

For each size: a database with that many audit events (written in one transaction),
then the full verification (`formrelay audit verify`, every row rehashed), the first
incremental one (no row verified before: the same work, then the head is recorded),
and an incremental one after 50 new events (what `formrelay check` and /healthz do on
a running service).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _harness import machine, table

from formrelay.ops.audit import Verification, verify
from formrelay.store import Store


def timed(fn: Callable[[], Verification]) -> tuple[float, Verification]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def fill(store: Store, n: int, start: int = 0) -> None:
    with store.transaction():
        for i in range(start, start + n):
            store.audit.append("received", actor="patient", ip="192.0.2.1",
                               reference=f"FR-BNCH-{i:06d}", form_id="intake",
                               detail="hold, 0 files")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append")
    args = ap.parse_args()
    rows_out = []
    for n in args.rows or [20000]:
        with tempfile.TemporaryDirectory(prefix="formrelay-bench-audit") as tmp:
            store = Store(Path(tmp) / "formrelay.db")
            fill(store, n)
            full, res = timed(lambda store=store: verify(store))
            assert res.ok
            first, _ = timed(lambda store=store: verify(store, incremental=True, record=True))
            fill(store, 50, n)
            later, res = timed(lambda store=store: verify(store, incremental=True, record=True))
            assert res.ok and res.rows == 50
            store.close()
        rows_out.append((n, f"{full * 1000:.0f}", f"{first * 1000:.0f}", f"{later * 1000:.1f}"))
    print(machine())
    print(table(["audit rows", "full verify ms", "first check ms", "check after +50 ms"],
                rows_out))


if __name__ == "__main__":
    main()
