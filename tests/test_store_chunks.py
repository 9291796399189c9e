"""A submission's ciphertext in the store: a form's few KB in the row, a post with files
(over 1 MB) in rows of 1 MB (`submission_chunks`) on either engine, read back whole and
gone with the submission. On SQLite the large one used to go into the row's BLOB, which
SQLite built whole in memory (~2.7x the ciphertext; bench/bench_intake.py's upload run
measures the worker's memory)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from formrelay.store import CHUNK, Store, StoreConflict

from .conftest import open_store

pytestmark = pytest.mark.usefixtures("database")  # opens its own stores


def _row(reference: str) -> dict[str, object]:
    return {"reference": reference, "form_id": "intake",
            "received_at": "2026-01-01T00:00:00.000000Z", "delivery": "hold",
            "status": "held", "file_count": 1}


def _chunk_sizes(store: Store, reference: str) -> list[int]:
    return [int(r[0]) for r in store.conn.execute(
        "SELECT length(data) FROM submission_chunks WHERE reference = ? ORDER BY n",
        (reference,))]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "formrelay.db")


def test_a_large_ciphertext_is_stored_in_chunks_and_read_back(store: Store,
                                                              tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK + 777)
    src = tmp_path / "ct.asc"
    src.write_bytes(data)
    store.submissions.add(_row("FR-BIG1-AAAA"), src)
    assert _chunk_sizes(store, "FR-BIG1-AAAA") == [CHUNK, CHUNK, 777]
    assert store.submissions.get("FR-BIG1-AAAA")["size"] == len(data)  # type: ignore[index]
    assert b"".join(store.submissions.stream("FR-BIG1-AAAA")) == data
    out = io.BytesIO()
    assert store.submissions.copy_to("FR-BIG1-AAAA", out) == len(data)
    assert out.getvalue() == data

    store.submissions.set_status("FR-BIG1-AAAA", "processed", drop_ciphertext=True)
    assert _chunk_sizes(store, "FR-BIG1-AAAA") == []
    with pytest.raises(KeyError):
        store.submissions.ciphertext("FR-BIG1-AAAA")


def test_a_form_without_files_stays_in_its_row(store: Store) -> None:
    data = b"-----BEGIN PGP MESSAGE-----\n" + os.urandom(20_000)
    store.submissions.add(_row("FR-SMAL-AAAA"), data)
    # PostgreSQL keeps every ciphertext in chunks: one here
    assert _chunk_sizes(store, "FR-SMAL-AAAA") == \
        ([len(data)] if store.engine.name == "postgresql" else [])
    assert store.submissions.ciphertext("FR-SMAL-AAAA") == data
    assert b"".join(store.submissions.stream("FR-SMAL-AAAA")) == data


def test_a_large_ciphertext_from_before_is_still_read_from_its_row(store: Store) -> None:
    if store.engine.name == "postgresql":
        pytest.skip("PostgreSQL always kept its ciphertexts in chunks")
    data = os.urandom(CHUNK + 5)  # as the incremental blob I/O wrote it before
    cols = ", ".join(_row("FR-OLD1-AAAA"))
    with store.transaction() as conn:
        conn.execute(f"INSERT INTO submissions ({cols}, size, ciphertext) "  # noqa: S608 - test
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [*_row("FR-OLD1-AAAA").values(), len(data), data])
    assert store.submissions.ciphertext("FR-OLD1-AAAA") == data
    store.submissions.set_status("FR-OLD1-AAAA", "processed", drop_ciphertext=True)
    with pytest.raises(KeyError):
        store.submissions.ciphertext("FR-OLD1-AAAA")


def test_a_refused_transaction_leaves_no_chunk_and_no_row(store: Store,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "ct.asc"
    src.write_bytes(os.urandom(3 * CHUNK))

    def refuse() -> None:  # e.g. the form token was used meanwhile
        raise RuntimeError("token already used")

    with pytest.raises(RuntimeError, match="token already used"), store.transaction():
        store.submissions.add(_row("FR-GONE-AAAA"), src)
        refuse()
    assert store.submissions.get("FR-GONE-AAAA") is None
    assert store.conn.execute("SELECT COUNT(*) FROM submission_chunks").fetchone()[0] == 0

    # the same reference again: a conflict, and the first one's chunks untouched
    store.submissions.add(_row("FR-TWIC-AAAA"), src)
    with pytest.raises(StoreConflict):
        store.submissions.add(_row("FR-TWIC-AAAA"), src)
    assert _chunk_sizes(store, "FR-TWIC-AAAA") == [CHUNK, CHUNK, CHUNK]
    assert store.submissions.ciphertext("FR-TWIC-AAAA") == src.read_bytes()
