"""Transactions and the migration runner under every concern of the store.

`StoreBase` holds one `Engine` (engines/: the SQLite file, or PostgreSQL at
`server.database_url`) and gives the concerns what they share: `transaction()` (nested
ones join the outer one), `retried`, `snapshot`, `lock`, and the named, ordered
migrations of `schema.py`, applied once each and recorded in `_migrations`. A write
the disk refuses (full, read-only, I/O error) rolls back whole and raises
`StoreNotWritable`, which callers answer with "temporarily unavailable"; a row whose
key exists already raises `StoreConflict`, whatever the engine. A transaction
PostgreSQL gives up in a deadlock or serialization conflict raises `StoreContended`
(a `StoreNotWritable`), which `retried` runs again a few times first.

`Concern` is the base of each concern (`store.submissions`, `store.outbox`, ...): it
reaches the store it belongs to, and through it the other concerns.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import sqlite_utils

from ..localtime import iso, utcnow
from .engines import Connection, Engine, Migration
from .engines.sqlite import SqliteEngine
from .errors import StoreContended, StoreError

if TYPE_CHECKING:
    from . import Store

log = logging.getLogger("formrelay.store")
T = TypeVar("T")

# a transaction PostgreSQL gave up in a deadlock or serialization conflict is run again
# this often in all before its caller is told (`StoreBase.retried`)
CONTENDED_TRIES = 5

# -- migrations (the steps themselves are in schema.py) ---------------------------------
MIGRATIONS: list[tuple[str, Migration]] = []
# The PostgreSQL form of a step, where its SQLite form does not run there: a script, or
# a function given the connection. A step without one runs its SQLite form on both
# (plain `db.execute(...)`/`db.conn.execute(...)` of SQL both engines take).
PG_MIGRATIONS: dict[str, str | Migration] = {}


def migration(name: str, *, postgres: str | Migration | None = None
              ) -> Callable[[Migration], Migration]:
    """Register a schema step; steps run once each, in the order they are declared."""

    def register(fn: Migration) -> Migration:
        MIGRATIONS.append((name, fn))
        if postgres is not None:
            PG_MIGRATIONS[name] = postgres
        return fn

    return register


def open_engine(path: Path, url: str = "") -> Engine:
    """PostgreSQL at `url` if given, else the SQLite file at `path`."""
    if url:
        from .engines.postgres import PostgresEngine  # psycopg: the optional extra
        return PostgresEngine(url)
    return SqliteEngine(path)


class StoreBase:
    """One database behind its engine: connections, transactions, migrations."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = utcnow, *, url: str = ""):
        self.path = path
        self.clock = clock
        self.url = url
        self.engine: Engine = open_engine(path, url)
        self.migrate()

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """What a failed statement raises on this engine (for callers that must tell a
        database failure from their own, like the rate limiter)."""
        return self.engine.errors

    @property
    def where(self) -> str:
        """The database named for an operator (no password)."""
        return self.engine.where

    @property
    def conn(self) -> Connection:
        return self.engine.conn

    @property
    def db(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.conn)

    def close(self) -> None:
        self.engine.close()

    @contextmanager
    def transaction(self, *, relaxed: bool = False) -> Iterator[Connection]:
        """One write transaction, all or nothing; a nested one joins the outer one, so a
        caller opens `with store.transaction():` and calls the concerns inside it. A
        disk that refuses the write raises `StoreNotWritable`, a key that exists already
        `StoreConflict`. `relaxed`: no fsync on commit (WAL + synchronous=NORMAL;
        PostgreSQL: synchronous_commit off), for counters and leases whose loss on power
        failure is harmless; the next full commit syncs them too (joined: the outer
        transaction's durability)."""
        conn = self.conn
        if conn.in_transaction:  # nested: join the outer transaction
            yield conn
            return
        try:
            with self._translated(), \
                    self.engine.transaction(self._before_commit, relaxed=relaxed) as tx:
                yield tx
        finally:
            self._transaction_ended()

    def _before_commit(self) -> None:
        """Work a concern leaves to the end of the transaction, run just before COMMIT
        (the audit log appends its rows there, store/audit.py)."""

    def _transaction_ended(self) -> None:
        """The outermost transaction committed or was rolled back: drop whatever
        `_before_commit` had still to do."""

    def retried(self, work: Callable[[], T]) -> T:
        """Run `work` (which opens its own transaction) and return what it returns; when
        PostgreSQL gives it up in a deadlock or serialization conflict (`StoreContended`,
        rolled back whole), run it again after a short random pause, up to
        CONTENDED_TRIES times in all, so a busy moment is not answered with 503. `work`
        must be safe to run again: everything it wrote was rolled back. Inside an outer
        transaction it runs once: the outer one is what has to be run again."""
        if self.conn.in_transaction:
            return work()
        for attempt in range(1, CONTENDED_TRIES + 1):
            try:
                return work()
            except StoreContended as exc:
                if attempt == CONTENDED_TRIES:
                    raise
                log.warning("transaction rolled back in a conflict with another (%s); "
                            "running it again (attempt %d of %d)", exc.__cause__.__class__
                            .__name__, attempt + 1, CONTENDED_TRIES)
                time.sleep(random.uniform(0.01, 0.05) * attempt)  # noqa: S311 - jitter only
        raise AssertionError("unreachable")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Engine errors into the store's own: disk/server trouble, key conflicts."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            mine = self.engine.failure(exc)
            if mine is None:
                raise
            raise mine from exc

    def lock(self, key: str) -> None:
        """Inside a transaction: wait until no other transaction holds `key`, and hold it
        to the end, in every process on the database."""
        self.engine.lock(key)

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        with self.transaction() as conn:
            return self.engine.migrate(conn, MIGRATIONS, PG_MIGRATIONS,
                                       lambda: iso(self.clock()))

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One read transaction: every read inside sees the same state of the database
        (WAL; REPEATABLE READ on PostgreSQL), even while other processes write (for
        checks that read in pages)."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        with self._translated(), self.engine.snapshot() as snap:
            yield snap

    def truncate_wal(self) -> None:
        """Copy the write-ahead log into the file and empty it, so pages that held a
        value since replaced (e.g. a secret now sealed) are not kept in it."""
        self.engine.truncate_wal()

    def check_writable(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _probe (x INTEGER)")
            conn.execute("DROP TABLE _probe")


class Concern:
    """One concern of the store (submissions, outbox, audit, ...): its queries, on the
    store's engine and transactions."""

    def __init__(self, store: Store):
        self.store = store

    @property
    def conn(self) -> Connection:
        return self.store.conn

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.store.clock

    @property
    def engine(self) -> Engine:
        return self.store.engine

    def transaction(self, *, relaxed: bool = False) -> AbstractContextManager[Connection]:
        return self.store.transaction(relaxed=relaxed)


__all__ = ["CONTENDED_TRIES", "MIGRATIONS", "PG_MIGRATIONS", "Concern", "StoreBase",
           "migration"]
