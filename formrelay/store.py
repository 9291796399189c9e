"""The only way into formrelay's SQLite database.

It owns the schema (named, ordered migrations recorded in `_migrations`), the
connections (one per thread, WAL mode, a busy timeout so several gunicorn workers and
the delivery worker can share the file) and every read and write: submissions with
their ciphertext, the audit log. It stores ciphertext and metadata only; callers hand
it what gpg wrote. Built on sqlite-utils; large ciphertexts are streamed into and out
of BLOBs with SQLite's incremental blob I/O so they are never held whole in memory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlite_utils

CHUNK = 1 << 20
GENESIS = "0" * 64


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# -- migrations ------------------------------------------------------------------------
Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(name: str) -> Callable[[Migration], Migration]:
    """Register a schema step; steps run once each, in the order they are declared."""

    def register(fn: Migration) -> Migration:
        MIGRATIONS.append((name, fn))
        return fn

    return register


@migration("0001_submissions")
def _submissions(db: sqlite_utils.Database) -> None:
    db["submissions"].create(  # type: ignore[union-attr]
        {
            "reference": str,
            "form_id": str,
            "received_at": str,
            "delivery": str,  # email | hold
            "status": str,  # queued | held | sent | failed | processed | deleted
            "size": int,  # bytes of armoured ciphertext
            "file_count": int,
            "ciphertext": bytes,
            "deleted_at": str,
        },
        pk="reference",
        not_null={"form_id", "received_at", "delivery", "status"},
    )
    db["submissions"].create_index(["form_id", "received_at"])  # type: ignore[union-attr]


@migration("0002_audit")
def _audit(db: sqlite_utils.Database) -> None:
    db["audit"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "at": str,
            "action": str,
            "outcome": str,
            "actor": str,
            "ip": str,
            "reference": str,
            "form_id": str,
            "detail": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="id",
        not_null={"at", "action", "outcome", "actor", "hash", "prev_hash"},
    )
    db["audit"].create_index(["reference"])  # type: ignore[union-attr]
    # Append-only: the database itself refuses to change or delete audit rows, except
    # the retention purge of rows older than the configured period (see purge_audit).
    db.execute(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
    )


AUDIT_FIELDS = ("at", "action", "outcome", "actor", "ip", "reference", "form_id", "detail")


def audit_hash(prev_hash: str, row: dict[str, Any]) -> str:
    body = json.dumps([prev_hash, *[row.get(k) or "" for k in AUDIT_FIELDS]],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class StoreError(Exception):
    """The database cannot be used; the message says what to do."""


class Store:
    """Thread-safe access to one database file; open it once per process."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = utcnow):
        self.path = path
        self.clock = clock
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._local = threading.local()
        self.migrate()

    # -- connections ------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"cannot open database {self.path}: {exc}; check that the "
                                 "data folder exists and is writable") from None
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=FULL")  # a "received" must survive power loss
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")  # deleted ciphertext pages are zeroed
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

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
        """BEGIN IMMEDIATE ... COMMIT: writers queue instead of failing mid-way."""
        conn = self.conn
        if conn.in_transaction:  # nested: join the outer transaction
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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

    def check_writable(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _probe (x)")
            conn.execute("DROP TABLE _probe")

    # -- submissions ------------------------------------------------------------------
    def add_submission(self, row: dict[str, Any], ciphertext: Path,
                       also: Callable[[], None] | None = None) -> None:
        """Commit a submission row and its ciphertext (copied from the file gpg wrote),
        plus whatever `also` writes (outbox, audit), in one transaction."""
        size = ciphertext.stat().st_size
        with self.transaction() as conn:
            self.db["submissions"].insert(  # type: ignore[union-attr]
                {**row, "size": size, "ciphertext": b""})
            conn.execute("UPDATE submissions SET ciphertext = zeroblob(?) WHERE reference = ?",
                         (size, row["reference"]))
            rowid = conn.execute("SELECT rowid FROM submissions WHERE reference = ?",
                                 (row["reference"],)).fetchone()[0]
            with conn.blobopen("submissions", "ciphertext", rowid) as blob, \
                    ciphertext.open("rb") as src:
                shutil.copyfileobj(src, blob, CHUNK)
            if also:
                also()

    def submission(self, reference: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT reference, form_id, received_at, delivery, status, size, file_count, "
            "deleted_at FROM submissions WHERE reference = ?", (reference,)).fetchone()
        return dict(row) if row else None

    def submissions(self, form_ids: list[str] | None = None,
                    status: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT reference, form_id, received_at, delivery, status, size, file_count, "
               "deleted_at FROM submissions WHERE 1=1")
        args: list[Any] = []
        if form_ids is not None:
            sql += f" AND form_id IN ({','.join('?' * len(form_ids))})"
            args += form_ids
        if status:
            sql += " AND status = ?"
            args.append(status)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY received_at DESC", args)]

    def copy_ciphertext(self, reference: str, dest: IO[bytes]) -> int:
        """Stream a submission's ciphertext into `dest`; returns bytes written."""
        conn = self.conn
        row = conn.execute("SELECT rowid, size FROM submissions WHERE reference = ? "
                           "AND ciphertext IS NOT NULL AND size > 0", (reference,)).fetchone()
        if not row:
            raise KeyError(reference)
        with conn.blobopen("submissions", "ciphertext", row[0], readonly=True) as blob:
            shutil.copyfileobj(blob, dest, CHUNK)
        return int(row[1])

    def ciphertext(self, reference: str) -> bytes:
        import io

        buf = io.BytesIO()
        self.copy_ciphertext(reference, buf)
        return buf.getvalue()

    def set_status(self, reference: str, status: str, *, drop_ciphertext: bool = False) -> None:
        with self.transaction() as conn:
            if drop_ciphertext:
                conn.execute("UPDATE submissions SET status = ?, ciphertext = NULL, "
                             "deleted_at = ? WHERE reference = ?",
                             (status, iso(self.clock()), reference))
            else:
                conn.execute("UPDATE submissions SET status = ? WHERE reference = ?",
                             (status, reference))

    # -- audit log --------------------------------------------------------------------
    def audit(self, action: str, outcome: str = "ok", *, actor: str = "system", ip: str = "",
              reference: str = "", form_id: str = "", detail: str = "") -> None:
        """Append one event to the hash-chained audit log (metadata only, never content)."""
        row = {"at": iso(self.clock()), "action": action, "outcome": outcome, "actor": actor,
               "ip": ip, "reference": reference, "form_id": form_id, "detail": detail}
        with self.transaction() as conn:
            last = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            prev = last[0] if last else GENESIS
            row["prev_hash"] = prev
            row["hash"] = audit_hash(prev, row)
            self.db["audit"].insert(row)  # type: ignore[union-attr,unused-ignore]

    def audit_rows(self, reference: str | None = None) -> list[dict[str, Any]]:
        if reference:
            cur = self.conn.execute("SELECT * FROM audit WHERE reference = ? ORDER BY id",
                                    (reference,))
        else:
            cur = self.conn.execute("SELECT * FROM audit ORDER BY id")
        return [dict(r) for r in cur]
