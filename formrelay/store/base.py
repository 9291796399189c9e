"""Connections, transactions and the migration runner under every part of the store.

`StoreBase` opens one SQLite connection per thread (WAL mode, FULL sync, foreign keys,
secure delete), serialises writers across threads and processes, and applies the named,
ordered migrations of `schema.py` once each, recording them in `_migrations`. The
time helpers (`utcnow`, `iso`, `parse_iso`) fix how every timestamp is stored.
The database and its companions (-wal, -shm, .lock) are private (0600) whatever the
umask. A write the disk refuses (full, read-only, I/O error) rolls back whole and
raises `StoreNotWritable`, which callers answer with "temporarily unavailable".
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from ..errors import OperatorError

CHUNK = 1 << 20
BUSY_SECONDS = 30


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# -- migrations (the steps themselves are in schema.py) ---------------------------------
Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(name: str) -> Callable[[Migration], Migration]:
    """Register a schema step; steps run once each, in the order they are declared."""

    def register(fn: Migration) -> Migration:
        MIGRATIONS.append((name, fn))
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


class StoreError(OperatorError):
    """The database cannot be used; the message says what to do."""


class StoreNotWritable(StoreError):
    """The disk refused a write (full, read-only, I/O error). The transaction was rolled
    back whole; the message (paths and the disk's reason, never content) is for the
    operator, the patient is told the form is temporarily unavailable."""


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
    SQLite gives -wal and -shm the mode of the database file, so this comes first."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return  # a read-only or missing folder: opening the database says so
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        pass  # not our file (another owner): `formrelay check` warns about its mode
    finally:
        os.close(fd)


class StoreBase:
    """One database file: connections, transactions, migrations. The parts of `Store`
    (submissions, audit log, outbox...) build on it."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = utcnow):
        self.path = path
        self.clock = clock
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._local = threading.local()
        self._writer = threading.Lock()
        self._lock_path = path.with_name(path.name + ".lock")
        self._private_files()
        self.migrate()

    def _private_files(self) -> None:
        private_file(self.path)
        for suffix in COMPANIONS:
            companion = self.path.with_name(self.path.name + suffix)
            if suffix == ".lock" or companion.exists():
                private_file(companion)

    # -- connections ------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
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
        return conn

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
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: writers queue instead of failing mid-way. All or
        nothing: a failed COMMIT (disk full) is rolled back too, never left open for the
        next caller to join; a disk that refuses the write raises `StoreNotWritable`."""
        conn = self.conn
        if conn.in_transaction:  # nested: join the outer transaction
            yield conn
            return
        try:
            with self._one_writer():
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
        except (sqlite3.Error, OSError) as exc:
            why = disk_problem(exc)
            if why is None:
                raise
            raise StoreNotWritable(f"database {self.path} cannot be written ({why}); free disk "
                                   f"space in {self.path.parent} or check that it is "
                                   "writable - forms answer \"temporarily unavailable\" "
                                   "until then") from exc

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
        guards the data. Gives up like SQLite would ("database is locked")."""
        if not self._writer.acquire(timeout=BUSY_SECONDS):
            raise sqlite3.OperationalError("database is locked")
        try:
            with _file_lock(self._lock_path, BUSY_SECONDS):
                yield
        finally:
            self._writer.release()

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
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

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every read inside sees the same state of the file
        (WAL), even while other processes write (for checks that read in pages)."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def truncate_wal(self) -> None:
        """Copy the write-ahead log into the file and empty it, so pages that held a
        value since replaced (e.g. a secret now sealed) are not kept in it. Best effort:
        while another process reads, SQLite leaves the log as it is."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def check_writable(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _probe (x)")
            conn.execute("DROP TABLE _probe")

    @contextmanager
    def _relaxed(self) -> Iterator[sqlite3.Connection]:
        """A transaction without fsync on commit (WAL + synchronous=NORMAL): for counters
        whose loss on power failure is harmless; the next FULL commit syncs them too."""
        conn = self.conn
        if conn.in_transaction:
            with self.transaction() as joined:
                yield joined
            return
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction() as c:
                yield c
        finally:
            if self._local.conn is conn:  # not dropped by a failed rollback
                conn.execute("PRAGMA synchronous=FULL")
