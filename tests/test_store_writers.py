"""Many writers at once on one database file (threads of several workers): every write
lands, the audit chain stays whole, and a writer that cannot get its turn gives up
with SQLite's own "database is locked" instead of hanging."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from formrelay.ops.audit import verify
from formrelay.store import Store
from formrelay.store.engines import sqlite as sqlite_engine

from .conftest import open_store

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

THREADS, EVENTS = 4, 15


def test_concurrent_writers_from_two_processes_all_land(tmp_path: Path) -> None:
    path = tmp_path / "formrelay.db"
    stores = [open_store(path), open_store(path)]  # like two gunicorn workers
    errors: list[BaseException] = []

    def write(st: Store, n: int) -> None:
        try:
            for i in range(EVENTS):
                with st.transaction():  # nested calls join the outer transaction
                    st.audit.append("received", actor="patient", reference=f"FR-{n}-{i}",
                                    form_id="intake")
                    st.audit.append("queued", reference=f"FR-{n}-{i}", form_id="intake")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(st, k * THREADS + t))
               for k, st in enumerate(stores) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for st in stores:
        st.close()
    assert errors == []
    check = open_store(path)
    rows = check.audit.rows()
    assert len(rows) == 2 * THREADS * EVENTS * 2
    for r in (r for r in rows if r["action"] == "received"):  # each pair stayed together
        assert rows[r["id"]]["reference"] == r["reference"]  # ids start at 1
    assert verify(check).ok
    check.close()


@pytest.mark.sqlite_only  # SQLite's own lock; PostgreSQL writers wait on row locks
def test_a_writer_that_never_gets_its_turn_gives_up(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_engine, "BUSY_SECONDS", 0.2)
    path = tmp_path / "formrelay.db"
    first, second = Store(path), Store(path)
    with first.transaction():
        first.audit.append("login", actor="u1")
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            second.audit.append("login", actor="u2")
    second.audit.append("login", actor="u3")  # the turn came: works again
    assert [r["actor"] for r in second.audit.rows()] == ["u1", "u3"]
    first.close()
    second.close()
