"""Connections, transactions and the migration runner under every part of the store.

Two engines behind one interface. SQLite (the default, a file in data_dir): `StoreBase`
opens one connection per thread (WAL mode, FULL sync, foreign keys, secure delete) and
serialises writers across threads and processes. PostgreSQL (`server.database_url`):
a psycopg pool (store/postgres.py), nothing on local disk, the database's own locks.
Either way it applies the named, ordered migrations of `schema.py` once each (each step
has SQL per engine only where the engines differ), recording them in `_migrations`. The
time helpers (`utcnow`, `iso`, `parse_iso`) fix how every timestamp is stored.
The database and its companions (-wal, -shm, .lock) are private (0600) whatever the
umask. A write the disk refuses (full, read-only, I/O error) rolls back whole and
raises `StoreNotWritable`, which callers answer with "temporarily unavailable"; a
row whose key exists already raises `StoreConflict`, whatever the engine. A transaction
PostgreSQL gives up in a deadlock or serialization conflict raises `StoreContended`
(a `StoreNotWritable`), which `retried` runs again a few times first.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from .errors import StoreConflict, StoreContended, StoreError, StoreNotWritable

log = logging.getLogger("formrelay.store")
T = TypeVar("T")

CHUNK = 1 << 20
BUSY_SECONDS = 30
# a transaction PostgreSQL gave up in a deadlock or serialization conflict is run again
# this often in all before its caller is told (`StoreBase.retried`)
CONTENDED_TRIES = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# A connection as the store's parts use it: sqlite3.Connection, or on PostgreSQL the
# adapter of store/postgres.py that takes the same SQL and gives back the same rows.
Connection = Any

# -- migrations (the steps themselves are in schema.py) ---------------------------------
Migration = Callable[[Any], None]
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


@contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive flock on `path`, polled (flock has no timeout) in short steps. Without
    a writable lock file this does nothing and SQLite's own busy handling remains."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        yield
        return
    try:
        deadline, pause = time.monotonic() + timeout, 0.0001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError("database is locked") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.001)
        yield
    finally:
        os.close(fd)  # releases the lock


# SQLite's primary result codes that mean the disk, not the data, is the problem.
_SQLITE_DISK = {13: "disk full", 8: "read-only", 10: "disk I/O error", 14: "cannot open"}
_OS_DISK = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EIO: "I/O error"}
COMPANIONS = ("-wal", "-shm", ".lock")  # files beside the database that hold its data


def disk_problem(exc: BaseException) -> str | None:
    """Why the disk refused a write ("disk full", ...), or None for any other error."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return _SQLITE_DISK.get(code & 0xFF)
        text = str(exc)
        return next((why for why, marker in (("disk full", "disk is full"),
                                             ("read-only", "readonly database"),
                                             ("disk I/O error", "disk I/O error"))
                     if marker in text), None)
    if isinstance(exc, OSError):
        return _OS_DISK.get(exc.errno or 0)
    return None


def private_file(path: Path) -> None:
    """Create `path` if missing and make it 0600 (an existing file too): the umask
    (often 022) must not leave ciphertext and metadata readable by other users.
    SQLite gives -wal and -shm the mode of the database file, so this comes first.

    An existing file is never opened here: closing any descriptor of a file drops every
    POSIX lock this process holds on it, SQLite's too. A second store on the same file
    in one process (the CLI, tests) then let another process take the WAL index for
    unused and reset it, and this process's connections no longer saw what the others
    committed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    except OSError:
        return  # a read-only or missing folder: opening the database says so
    else:
        os.close(fd)  # new: nobody holds a lock on it yet
    try:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass  # not our file (another owner): `formrelay check` warns about its mode


def _pg_problem(exc: BaseException) -> str | None:
    """Why PostgreSQL refused a write (server gone, disk full, read-only), or None."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError:  # pragma: no cover - no PostgreSQL engine installed
        return None
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return "no database connection (server unreachable or every connection busy)"
    if isinstance(exc, psycopg.errors.DiskFull | psycopg.errors.InsufficientResources):
        return "disk full"
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return "read-only"
    if isinstance(exc, psycopg.OperationalError):
        return "connection lost"
    return None


def _is_contended(exc: BaseException) -> bool:
    """PostgreSQL rolled the transaction back in a conflict with another: a deadlock
    (40P01) or a serialization failure (40001). Running it again is the cure."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)


def _is_conflict(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc)
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.errors.UniqueViolation)


# Connections kept for the next greenlets of a gevent worker (more are closed).
IDLE_CONNECTIONS = 32


def _on_greenlet_end(callback: Callable[[sqlite3.Connection], None],
                     conn: sqlite3.Connection) -> None:
    """Under gevent (gunicorn's worker), `threading.local` is per greenlet, and a worker
    runs a greenlet per HTTP connection: hand `conn` to `callback` when the current
    greenlet is gone. Threads (the CLI, the delivery worker, tests) keep theirs."""
    if "gevent" not in sys.modules:
        return
    from gevent import getcurrent, monkey

    if not monkey.is_module_patched("threading"):
        return
    current = getcurrent()
    if getattr(current, "parent", None) is None:  # the hub's main greenlet: lives on
        return
    weakref.finalize(current, callback, conn)


class StoreBase:
    """One database (a SQLite file, or PostgreSQL at `url`): connections, transactions,
    migrations. The parts of `Store` (submissions, audit log, outbox...) build on it."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = utcnow, *, url: str = ""):
        self.path = path
        self.clock = clock
        self.url = url
        self._local = threading.local()
        # Connections of finished greenlets, for the next ones (`_greenlet_done`).
        self._idle: list[sqlite3.Connection] = []
        self._writer = threading.Lock()
        self._lock_path = path.with_name(path.name + ".lock")
        self._pg: Any = None
        if url:
            from .postgres import PgConnection, open_pool
            self._pg = PgConnection(open_pool(url))
        else:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._private_files()
        self.migrate()

    @property
    def engine(self) -> str:
        """"postgresql" or "sqlite"; for messages and the few engine-specific steps."""
        return "postgresql" if self._pg is not None else "sqlite"

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """What a failed statement raises on this engine (for callers that must tell a
        database failure from their own, like the rate limiter)."""
        if self._pg is not None:
            import psycopg
            import psycopg_pool
            return (StoreError, psycopg.Error, psycopg_pool.PoolTimeout)
        return (StoreError, sqlite3.Error)

    @property
    def where(self) -> str:
        """The database named for an operator (no password)."""
        if self._pg is not None:
            from .postgres import redact
            return redact(self.url)
        return str(self.path)

    def _private_files(self) -> None:
        private_file(self.path)
        for suffix in COMPANIONS:
            companion = self.path.with_name(self.path.name + suffix)
            if suffix == ".lock" or companion.exists():
                private_file(companion)

    # -- connections ------------------------------------------------------------------
    @property
    def conn(self) -> Connection:
        if self._pg is not None:
            return self._pg
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None and self._idle:
            conn = self._idle.pop()
            self._local.conn = conn
            _on_greenlet_end(self._greenlet_done, conn)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None,
                                       check_same_thread=False)
                self._wal(conn)
            except sqlite3.OperationalError as exc:
                kind = StoreNotWritable if disk_problem(exc) else StoreError
                raise kind(f"cannot open database {self.path}: {exc}; check that the "
                           "data folder exists, is writable and has free space") from None
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=FULL")  # a "received" must survive power loss
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")  # deleted ciphertext pages are zeroed
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            _on_greenlet_end(self._greenlet_done, conn)
        return conn

    def _greenlet_done(self, conn: sqlite3.Connection) -> None:
        """A greenlet that used `conn` has ended: keep it for the next one instead of
        opening a new SQLite connection per HTTP connection (each with its WAL setup and
        a cold schema and page cache). One that is left in a transaction is rolled back,
        one that fails that is dropped."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:  # closed by a failed rollback, or unusable
            return
        if len(self._idle) < IDLE_CONNECTIONS:
            self._idle.append(conn)
        else:
            conn.close()

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL. On a new file several processes (gunicorn workers booting at
        once) race for this; SQLite answers "locked" at once instead of waiting, and a
        worker that fails to boot stops gunicorn. So take turns and retry."""
        deadline = time.monotonic() + BUSY_SECONDS
        with _file_lock(self._lock_path, BUSY_SECONDS):
            while True:
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    @property
    def db(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.conn)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            return
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        while self._idle:
            self._idle.pop().close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN IMMEDIATE ... COMMIT: writers queue instead of failing mid-way. All or
        nothing: a failed COMMIT (disk full) is rolled back too, never left open for the
        next caller to join; a disk that refuses the write raises `StoreNotWritable`, a
        key that exists already `StoreConflict`. On PostgreSQL one transaction (READ
        COMMITTED) on a pooled connection; what must happen once takes a row or advisory
        lock (`lock`)."""
        if self.conn.in_transaction:  # nested: join the outer transaction
            yield self.conn
            return
        try:
            with self._translated():
                if self._pg is not None:
                    with self._pg.transaction() as pg:
                        yield pg
                        self._before_commit()
                    return
                conn = self.conn
                with self._one_writer():
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        yield conn
                        self._before_commit()
                        conn.execute("COMMIT")
                    except BaseException:
                        self._rollback(conn)
                        raise
        finally:
            self._transaction_ended()

    def _before_commit(self) -> None:
        """Work a part of the store leaves to the end of the transaction, run just before
        COMMIT (the audit log appends its rows there, store/audit.py)."""

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
            if _is_conflict(exc):
                raise StoreConflict(str(exc).splitlines()[0]) from exc
            if _is_contended(exc):  # before _pg_problem: these are OperationalErrors too
                raise StoreContended(f"database {self.where}: transaction rolled back in a "
                                     f"conflict with another ({type(exc).__name__}); "
                                     "it can be run again") from exc
            why = disk_problem(exc) or _pg_problem(exc)
            if why is None:
                raise
            if self._pg is not None:
                raise StoreNotWritable(f"database {self.where} cannot be written ({why}); "
                                       "check that PostgreSQL is running and has free disk "
                                       "space - forms answer \"temporarily unavailable\" "
                                       "until then") from exc
            raise StoreNotWritable(f"database {self.path} cannot be written ({why}); free disk "
                                   f"space in {self.path.parent} or check that it is "
                                   "writable - forms answer \"temporarily unavailable\" "
                                   "until then") from exc

    def lock(self, key: str) -> None:
        """Inside a transaction: wait until no other transaction holds `key`, and hold it
        to the end. SQLite has one writer at a time already; PostgreSQL takes an
        advisory transaction lock, valid across every process on the database."""
        if self._pg is not None:
            self._pg.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    def _rollback(self, conn: sqlite3.Connection) -> None:
        """Undo what the transaction wrote. SQLite may have rolled back already (some
        disk-full errors do); if ROLLBACK itself fails, dropping the connection does."""
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _one_writer(self) -> Iterator[None]:
        """Writers wait their turn here, not in SQLite's busy handler: that one polls with
        sleeps of up to 100 ms in no order, so with a few workers posting at once a commit
        waited seconds (bench/bench_intake.py). Threads queue on a lock, processes
        (workers, delivery, CLI) on an flock of `<db>.lock`; SQLite's locking still
        guards the data. Gives up like SQLite would ("database is locked"). SQLite only:
        PostgreSQL never uses a local lock file."""
        if not self._writer.acquire(timeout=BUSY_SECONDS):
            raise sqlite3.OperationalError("database is locked")
        try:
            with _file_lock(self._lock_path, BUSY_SECONDS):
                yield
        finally:
            self._writer.release()

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        if self._pg is not None:
            return self._migrate_pg()
        applied: list[str] = []
        with self.transaction():
            db = self.db
            db["_migrations"].create(  # type: ignore[union-attr]
                {"name": str, "applied_at": str}, pk="name", if_not_exists=True)
            done = {r["name"] for r in db["_migrations"].rows}
            for name, step in MIGRATIONS:
                if name not in done:
                    step(db)
                    db["_migrations"].insert({"name": name,  # type: ignore[union-attr]
                                              "applied_at": iso(self.clock())})
                    applied.append(name)
        return applied

    def _migrate_pg(self) -> list[str]:
        """The same steps on PostgreSQL, in one transaction; instances starting at once
        take turns (an advisory lock), so each step runs once."""
        applied: list[str] = []
        with self.transaction() as conn:
            self.lock("formrelay migrations")
            conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, "
                         "applied_at TEXT)")
            done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
            for name, step in MIGRATIONS:
                if name in done:
                    continue
                pg = PG_MIGRATIONS.get(name, step)
                if isinstance(pg, str):
                    conn.executescript(pg)
                else:
                    pg(conn)
                conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                             (name, iso(self.clock())))
                applied.append(name)
        return applied

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One read transaction: every read inside sees the same state of the database
        (WAL; REPEATABLE READ on PostgreSQL), even while other processes write (for
        checks that read in pages)."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        if self._pg is not None:
            with self._translated(), self._pg.transaction(isolation="REPEATABLE READ") as pg:
                yield pg
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def truncate_wal(self) -> None:
        """Copy the write-ahead log into the file and empty it, so pages that held a
        value since replaced (e.g. a secret now sealed) are not kept in it. Best effort:
        while another process reads, SQLite leaves the log as it is. (PostgreSQL: its
        own WAL and vacuum; nothing to do here.)"""
        if self._pg is None:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def check_writable(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _probe (x INTEGER)")
            conn.execute("DROP TABLE _probe")

    @contextmanager
    def _relaxed(self) -> Iterator[Connection]:
        """A transaction without fsync on commit (WAL + synchronous=NORMAL; PostgreSQL:
        synchronous_commit off): for counters and leases whose loss on power failure is
        harmless; the next FULL commit syncs them too."""
        conn = self.conn
        if conn.in_transaction:
            with self.transaction() as joined:
                yield joined
            return
        if self._pg is not None:
            try:
                with self._translated(), self._pg.transaction(relaxed=True) as pg:
                    yield pg
                    self._before_commit()
            finally:
                self._transaction_ended()
            return
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction() as c:
                yield c
        finally:
            if self._local.conn is conn:  # not dropped by a failed rollback
                conn.execute("PRAGMA synchronous=FULL")
