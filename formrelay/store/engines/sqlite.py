"""The SQLite engine (the default): one file in data_dir, shared by every process.

One connection per thread (WAL mode, FULL sync, foreign keys, secure delete); writers
take turns on a lock and an flock of `<db>.lock` (faster and fairer than SQLite's busy
handler); a ciphertext is streamed into and out of its BLOB with SQLite's incremental
blob I/O. The database and its companions (-wal, -shm, .lock) are private (0600)
whatever the umask.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import sqlite_utils

from ..errors import StoreConflict, StoreError, StoreNotWritable
from . import CHUNK, Connection, Migration, put_chunks, read_chunks

BUSY_SECONDS = 30
# Connections kept for the next greenlets of a gevent worker (more are closed).
IDLE_CONNECTIONS = 32


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


class SqliteEngine:
    """The SQLite file at `path`: connections, writers' turns, blobs, backup."""

    name = "sqlite"
    errors: tuple[type[Exception], ...] = (StoreError, sqlite3.Error)
    for_update = ""  # one writer at a time holds the whole database already
    skip_locked = ""

    def __init__(self, path: Path):
        self.path = path
        self.where = str(path)
        self.folder: Path | None = path.parent
        self._local = threading.local()
        # Connections of finished greenlets, for the next ones (`_greenlet_done`).
        self._idle: list[sqlite3.Connection] = []
        self._writer = threading.Lock()
        self._lock_path = path.with_name(path.name + ".lock")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_file(path)
        for suffix in COMPANIONS:
            companion = path.with_name(path.name + suffix)
            if suffix == ".lock" or companion.exists():
                private_file(companion)

    # -- connections ------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
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

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        while self._idle:
            self._idle.pop().close()

    # -- transactions -----------------------------------------------------------------
    @contextmanager
    def transaction(self, before_commit: Callable[[], None], *,
                    relaxed: bool = False) -> Iterator[Connection]:
        """BEGIN IMMEDIATE ... COMMIT: writers queue instead of failing mid-way; a failed
        COMMIT (disk full) is rolled back too, never left open for the next caller to
        join. `relaxed`: WAL + synchronous=NORMAL, no fsync on this commit (the next FULL
        commit syncs it too)."""
        conn = self.conn
        if relaxed:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._one_writer():
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    yield conn
                    before_commit()
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
        finally:
            if relaxed and getattr(self._local, "conn", None) is conn:  # not dropped
                conn.execute("PRAGMA synchronous=FULL")

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

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction: WAL keeps its view while other processes write."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def lock(self, key: str) -> None:
        """Nothing to do: SQLite has one writer at a time already."""

    def failure(self, exc: BaseException) -> StoreError | None:
        if isinstance(exc, sqlite3.IntegrityError) and (
                "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc)):
            return StoreConflict(str(exc).splitlines()[0])
        why = disk_problem(exc)
        if why is None:
            return None
        return StoreNotWritable(f"database {self.path} cannot be written ({why}); free disk "
                                f"space in {self.path.parent} or check that it is "
                                "writable - forms answer \"temporarily unavailable\" "
                                "until then")

    # -- schema -----------------------------------------------------------------------
    def migrate(self, conn: Connection, steps: Sequence[tuple[str, Migration]],
                forms: dict[str, str | Migration], now: Callable[[], str]) -> list[str]:
        """Each step in its SQLite form, given sqlite-utils' Database."""
        applied: list[str] = []
        db = sqlite_utils.Database(conn)
        db["_migrations"].create(  # type: ignore[union-attr]
            {"name": str, "applied_at": str}, pk="name", if_not_exists=True)
        done = {r["name"] for r in db["_migrations"].rows}
        for name, step in steps:
            if name not in done:
                step(db)
                db["_migrations"].insert({"name": name,  # type: ignore[union-attr]
                                          "applied_at": now()})
                applied.append(name)
        return applied

    # -- SQL spelled differently --------------------------------------------------------
    def json_pairs(self) -> str:
        return "json_each(?)"

    # -- ciphertexts: in the row up to CHUNK, else rows of CHUNK bytes ---------------------
    # Not SQLite's incremental blob I/O for large ones: the columns added by later
    # migrations follow `ciphertext` in the row, so SQLite builds the whole record in
    # memory with the zeroblob written out in full (~2.7x the ciphertext: 75 MB for a
    # 20 MB upload). Rows stored before in one large BLOB are still read from it.
    def put_ciphertext(self, conn: Connection, insert: str, params: list[Any],
                       reference: str, source: IO[bytes], size: int) -> None:
        """A ciphertext of up to `CHUNK` (a form without files) in the row; a larger one
        as an empty marker in the row and the file in rows of `submission_chunks`, one
        read at a time."""
        if size <= CHUNK:
            conn.execute(insert + "?)", [*params, source.read()])
            return
        put_chunks(conn, insert, params, reference, source)

    def ciphertext(self, reference: str) -> Iterator[bytes]:
        row = self.conn.execute("SELECT rowid, length(ciphertext) FROM submissions "
                                "WHERE reference = ?", (reference,)).fetchone()
        if row is None:
            raise KeyError(reference)
        if not row[1]:  # the marker: the ciphertext is in submission_chunks
            yield from read_chunks(self.conn, reference)
            return
        with self.conn.blobopen("submissions", "ciphertext", int(row[0]),
                                readonly=True) as blob:
            while piece := blob.read(CHUNK):
                yield piece

    def drop_ciphertext(self, conn: Connection, reference: str) -> None:
        """The chunks of a large one (setting the row's BLOB to NULL freed a small one;
        secure_delete overwrites both)."""
        conn.execute("DELETE FROM submission_chunks WHERE reference = ?", (reference,))

    # -- files --------------------------------------------------------------------------
    def backup(self, dest: Path) -> dict[str, int]:
        """Copy the database to `dest` with SQLite's online backup API: one consistent
        snapshot while the service keeps writing (in WAL mode the copy is one read
        transaction; writers are not blocked). Written beside `dest`, checked, then
        renamed into place with mode 0600; returns what the copy holds."""
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        tmp.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            target = sqlite3.connect(tmp)
            try:
                self.conn.backup(target)  # all pages in one step: a single snapshot
                # a self-contained file: no -wal/-shm beside it
                target.execute("PRAGMA journal_mode=DELETE")
                problem = target.execute("PRAGMA integrity_check").fetchone()[0]
                if problem != "ok":
                    raise StoreError(f"backup {dest} failed its integrity check ({problem}); "
                                     "nothing was written")
                counts = {
                    "submissions": target.execute(
                        "SELECT COUNT(*) FROM submissions").fetchone()[0],
                    "ciphertexts": target.execute(
                        "SELECT COUNT(*) FROM submissions WHERE ciphertext IS NOT NULL "
                        "AND size > 0").fetchone()[0],
                    "audit_events": target.execute("SELECT COUNT(*) FROM audit").fetchone()[0],
                }
            finally:
                target.close()
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        counts["bytes"] = dest.stat().st_size
        return counts

    def truncate_wal(self) -> None:
        """Best effort: while another process reads, SQLite leaves the log as it is."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
