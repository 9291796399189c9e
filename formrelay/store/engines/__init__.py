"""The database engines under `Store`: one interface, SQLite and PostgreSQL behind it.

Everything that differs between the engines lives here and nowhere else in the store:
connections, transactions and their durability, locking, the errors each engine raises,
streaming a submission's ciphertext in and out, the few SQL fragments that are spelled
differently, the schema steps' per-engine forms and the SQLite file's backup. The
store's concerns (submissions, outbox, audit, ...) write their SQL once, with `?`
placeholders as SQLite takes them, and ask the engine for the rest; none of them
asks which engine it has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, Protocol

from ..errors import StoreError

CHUNK = 1 << 20  # a ciphertext moves in and out in pieces this big, never whole

# A connection as the concerns use it: sqlite3.Connection, or on PostgreSQL the adapter
# of engines/postgres.py that takes the same SQL and gives back the same rows.
Connection = Any
# A schema step (schema.py): given sqlite-utils' Database on SQLite, the connection
# adapter on PostgreSQL (where its PostgreSQL form may be a script instead).
Migration = Callable[[Any], None]



def put_chunks(conn: Connection, insert: str, params: list[Any], reference: str,
               source: IO[bytes]) -> None:
    """Inside a transaction, on either engine: the submission's row with an empty marker
    in `ciphertext`, then the ciphertext in rows of `CHUNK` bytes of `submission_chunks`,
    one read at a time."""
    conn.execute(insert + "?)", [*params, b""])
    n = 0
    while chunk := source.read(CHUNK):
        conn.execute("INSERT INTO submission_chunks (reference, n, data) VALUES (?, ?, ?)",
                     (reference, n, chunk))
        n += 1
        del chunk


def read_chunks(conn: Connection, reference: str) -> Iterator[bytes]:
    """A chunked ciphertext's rows in order, one query each."""
    n = 0
    while (row := conn.execute("SELECT data FROM submission_chunks WHERE reference = ? "
                               "AND n = ?", (reference, n)).fetchone()) is not None:
        yield bytes(row[0])
        n += 1

class Engine(Protocol):
    """What the store needs from a database engine."""

    name: str  # "sqlite" or "postgresql", for messages
    where: str  # the database named for an operator (no password)
    folder: Path | None  # the local folder that holds the data (free space), or None
    errors: tuple[type[Exception], ...]  # what a failed statement raises on this engine
    for_update: str  # appended to a SELECT to lock its rows to the transaction's end
    skip_locked: str  # ... and to skip rows another transaction locked

    @property
    def conn(self) -> Connection:
        """This thread's connection (or the transaction's)."""

    def transaction(self, before_commit: Callable[[], None], *,
                    relaxed: bool = False) -> AbstractContextManager[Connection]:
        """One write transaction (not nested: the store joins nested ones); runs
        `before_commit` just before COMMIT. `relaxed`: no fsync on commit."""

    def snapshot(self) -> AbstractContextManager[Connection]:
        """One read transaction: every read inside sees the same state."""

    def failure(self, exc: BaseException) -> StoreError | None:
        """The store's own error for what this engine raised, or None to let it pass."""

    def lock(self, key: str) -> None:
        """Inside a transaction: hold `key` to its end, across every process."""

    def migrate(self, conn: Connection, steps: Sequence[tuple[str, Migration]],
                forms: dict[str, str | Migration], now: Callable[[], str]) -> list[str]:
        """Inside a transaction: apply the steps not recorded in `_migrations` (in the
        engine's own form from `forms`, where it has one); returns their names."""

    def json_pairs(self) -> str:
        """A table of (key, value) text pairs from a JSON object given as one parameter."""

    def put_ciphertext(self, conn: Connection, insert: str, params: list[Any],
                       reference: str, source: IO[bytes], size: int) -> None:
        """Inside a transaction: insert a submission row and stream its ciphertext in.
        `insert` is the INSERT up to the ciphertext's value (`... VALUES (?, ?, `),
        `params` its parameters; the engine adds the ciphertext's own."""

    def ciphertext(self, reference: str) -> Iterator[bytes]:
        """A stored submission's ciphertext in chunks (it has one, the caller checked)."""

    def drop_ciphertext(self, conn: Connection, reference: str) -> None:
        """Inside a transaction: what remains of a ciphertext set to NULL."""

    def backup(self, dest: Path) -> dict[str, int]:
        """A consistent, checked copy of the database at `dest` and what it holds, or a
        StoreError saying how this engine's data is backed up instead."""

    def truncate_wal(self) -> None:
        """Fold the write-ahead log into the database and empty it, where there is one."""

    def close(self) -> None:
        """Close this process's connections."""


__all__ = ["CHUNK", "Connection", "Engine", "Migration", "put_chunks", "read_chunks"]
