"""The only way into formrelay's SQLite database.

It owns the schema (named, ordered migrations recorded in `_migrations`), the
connections (one per thread, WAL mode, a busy timeout so several gunicorn workers and
the delivery worker can share the file) and every read and write: submissions with
their ciphertext, the audit log. It stores ciphertext and metadata only; callers hand
it what gpg wrote. Built on sqlite-utils; large ciphertexts are streamed into and out
of BLOBs with SQLite's incremental blob I/O so they are never held whole in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    # The row's id is chained too (since 0030): a removed or renumbered row breaks it.
    body = json.dumps([prev_hash, int(row.get("id") or 0),
                       *[row.get(k) or "" for k in AUDIT_FIELDS]],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


# -- outbox schema (migrations 0010-0019) --------------------------------------------
@migration("0010_outbox")
def _outbox(db: sqlite_utils.Database) -> None:
    # One row per mail to send. `payload` is opaque to the outbox (its kind's builder
    # reads it); a submission's mail has none, its builder streams the stored ciphertext.
    # A row is claimed by setting lease_owner/lease_until, so only one process sends it.
    db.execute("""
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            reference TEXT NOT NULL DEFAULT '',
            form_id TEXT NOT NULL DEFAULT '',
            recipients TEXT NOT NULL,
            payload BLOB,
            message_id TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'queued',
            created_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_attempt_at TEXT,
            lease_owner TEXT,
            lease_until TEXT,
            error_class TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '',
            done_at TEXT
        )""")
    db.execute("CREATE INDEX outbox_due ON outbox (status, next_attempt_at)")
    db.execute("CREATE INDEX outbox_reference ON outbox (reference)")


@migration("0011_key_reminders")
def _key_reminders(db: sqlite_utils.Database) -> None:
    # Which key-expiry reminder went out, so each is mailed once across processes.
    db.execute("""
        CREATE TABLE key_reminders (
            fingerprint TEXT NOT NULL,
            expires TEXT NOT NULL,
            days INTEGER NOT NULL,
            sent_at TEXT NOT NULL,
            PRIMARY KEY (fingerprint, expires, days)
        )""")


# -- public form protection (issue 3; migrations 0020-0029) ---------------------------
@migration("0020_used_form_tokens")
def _used_form_tokens(db: sqlite_utils.Database) -> None:
    # Ids of form tokens already posted (replays are refused), each kept only until the
    # token would be refused as too old anyway. Times are Unix seconds.
    db.execute("CREATE TABLE used_form_tokens (id TEXT PRIMARY KEY, expires_at REAL NOT NULL)")
    db.execute("CREATE INDEX used_form_tokens_expiry ON used_form_tokens (expires_at)")


@migration("0021_rate_limits")
def _rate_limits(db: sqlite_utils.Database) -> None:
    # Fixed-window rate-limit counters (ratelimit.py), in the database so that every
    # gunicorn worker process counts against the same numbers.
    db.execute("CREATE TABLE rate_limits (key TEXT PRIMARY KEY, count INTEGER NOT NULL, "
               "expires_at REAL NOT NULL)")
    db.execute("CREATE INDEX rate_limits_expiry ON rate_limits (expires_at)")


# -- clinician area, accounts, audit chain (issue 5; migrations 0030-0039) -----------
def _audit_hash_v1(prev_hash: str, row: dict[str, Any]) -> str:
    """The 0002 formula (no id), only to re-chain rows written before 0030."""
    body = json.dumps([prev_hash, *[row.get(k) or "" for k in AUDIT_FIELDS]],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@migration("0030_audit_chain")
def _audit_chain(db: sqlite_utils.Database) -> None:
    conn = db.conn
    rows = [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
    prev, intact = GENESIS, True
    for r in rows:
        intact = intact and r["prev_hash"] == prev and r["hash"] == _audit_hash_v1(prev, r)
        prev = r["hash"]
    if rows and intact:
        # Re-chain an intact pre-0030 log with the ids included; a broken one is left
        # exactly as found, so `audit verify` reports it.
        conn.execute("DROP TRIGGER audit_no_update")
        prev = GENESIS
        for r in rows:
            new = audit_hash(prev, r)
            conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?",
                         (prev, new, r["id"]))
            prev = new
        conn.execute("CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
                     "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END")
    last = rows[-1] if rows else None
    # The head (last id and hash ever written) shows a cut-off tail; anchors record
    # where the retention purge cut the beginning, so the rest still verifies.
    conn.execute("CREATE TABLE audit_head (one INTEGER PRIMARY KEY CHECK (one = 1), "
                 "last_id INTEGER NOT NULL, last_hash TEXT NOT NULL)")
    head = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    conn.execute("INSERT INTO audit_head VALUES (1, ?, ?)",
                 (head[0], head[1]) if last else (0, GENESIS))
    conn.execute("CREATE TRIGGER audit_head_advance AFTER INSERT ON audit BEGIN "
                 "UPDATE audit_head SET last_id = NEW.id, last_hash = NEW.hash; END")
    conn.execute("CREATE TABLE audit_anchor (id INTEGER PRIMARY KEY, at TEXT NOT NULL, "
                 "upto_id INTEGER NOT NULL, upto_hash TEXT NOT NULL)")
    for op in ("UPDATE", "DELETE"):
        conn.execute(f"CREATE TRIGGER audit_anchor_no_{op.lower()} BEFORE {op} ON audit_anchor "
                     "BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only'); END")
    conn.execute("CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit WHEN OLD.id > "
                 "COALESCE((SELECT MAX(upto_id) FROM audit_anchor), 0) BEGIN SELECT "
                 "RAISE(ABORT, 'audit log is append-only; only the retention purge removes "
                 "old rows'); END")


@migration("0031_clinician_accounts")
def _clinician_accounts(db: sqlite_utils.Database) -> None:
    conn = db.conn
    # totp_secret is NULL until enrolled at first login; totp_last_step refuses a code
    # that was used before (also across processes: the claim is one UPDATE).
    conn.execute("""
        CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            username TEXT NOT NULL UNIQUE,
            email TEXT NOT NULL DEFAULT '',
            password_hash TEXT NOT NULL,
            totp_secret TEXT,
            totp_last_step INTEGER NOT NULL DEFAULT 0,
            recipients TEXT NOT NULL DEFAULT '[]',
            forms TEXT NOT NULL DEFAULT '[]',
            created_at TEXT NOT NULL,
            changed_at TEXT NOT NULL,
            disabled_at TEXT,
            last_login_at TEXT
        )""")
    conn.execute("""
        CREATE TABLE recovery_codes (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            code_hash TEXT NOT NULL,
            used_at TEXT
        )""")
    conn.execute("""
        CREATE TABLE api_tokens (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            hint TEXT NOT NULL,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        )""")
    conn.execute("CREATE TABLE login_failures (id INTEGER PRIMARY KEY, at TEXT NOT NULL, "
                 "username TEXT NOT NULL, ip TEXT NOT NULL)")
    conn.execute("CREATE INDEX login_failures_user ON login_failures (username, at)")
    conn.execute("CREATE INDEX login_failures_ip ON login_failures (ip, at)")
    # Server-side sessions: only a hash of the cookie's value is stored.
    conn.execute("""
        CREATE TABLE sessions (
            sid_hash TEXT PRIMARY KEY,
            user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}'
        )""")


@migration("0032_held_notices")
def _held_notices(db: sqlite_utils.Database) -> None:
    # Held submissions waiting for a batched notification mail, and when each form's
    # last batch went out.
    db.conn.execute("CREATE TABLE held_notices (reference TEXT PRIMARY KEY, "
                    "form_id TEXT NOT NULL, received_at TEXT NOT NULL, mailed_at TEXT)")
    db.conn.execute("CREATE INDEX held_notices_form ON held_notices (form_id, mailed_at)")
    db.conn.execute("CREATE TABLE notice_batches (form_id TEXT PRIMARY KEY, "
                    "last_at TEXT NOT NULL)")


# -- patient copies (issue 6; migrations 0040-0049) -------------------------------------
@migration("0040_copies")
def _copies(db: sqlite_utils.Database) -> None:
    # One row per patient copy. `ciphertext` is AES-GCM under a key that exists only in
    # the link; `check_hash` and `code_mac` are derived from the link secret too, so this
    # table alone opens nothing and cannot test pickup codes. A deleted copy keeps its
    # row (no content) for a while, so its link gets the right friendly page.
    db.conn.execute("""
        CREATE TABLE copies (
            id TEXT PRIMARY KEY,
            reference TEXT NOT NULL,
            form_id TEXT NOT NULL,
            lang TEXT NOT NULL,
            check_hash TEXT NOT NULL,
            code_mac TEXT NOT NULL,
            quick_hash TEXT NOT NULL,
            quick_until TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            max_downloads INTEGER NOT NULL,
            downloads INTEGER NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'active',
            ciphertext BLOB,
            size INTEGER NOT NULL DEFAULT 0,
            deleted_at TEXT
        )""")
    db.conn.execute("CREATE INDEX copies_due ON copies (state, expires_at)")
    db.conn.execute("CREATE INDEX copies_reference ON copies (reference)")
    # everything but the ciphertext: what reads and lists use
    db.conn.execute("CREATE VIEW copy_meta AS SELECT id, reference, form_id, lang, check_hash, "
                    "code_mac, quick_hash, quick_until, created_at, expires_at, max_downloads, "
                    "downloads, failures, state, size, deleted_at FROM copies")


@dataclass(frozen=True)
class OutboxMail:
    """One claimed outbox row, as handed to a kind's builder (see delivery.py)."""

    id: int
    kind: str
    reference: str
    form_id: str
    recipients: tuple[str, ...]
    payload: bytes
    message_id: str
    created_at: datetime
    attempts: int


def _outbox_mail(row: sqlite3.Row, attempts: int) -> OutboxMail:
    return OutboxMail(id=row["id"], kind=row["kind"], reference=row["reference"],
                      form_id=row["form_id"], recipients=tuple(json.loads(row["recipients"])),
                      payload=row["payload"] or b"", message_id=row["message_id"],
                      created_at=parse_iso(row["created_at"]), attempts=attempts)


_AUDIT_COLUMNS = ("id", *AUDIT_FIELDS, "prev_hash", "hash")
_AUDIT_INSERT = (f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "  # noqa: S608 - fixed names
                 f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})")


BUSY_SECONDS = 30


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


def _quote(column: str) -> str:
    """A column name for SQL (names come from code, never from a request)."""
    return '"' + column.replace('"', '""') + '"'


class StoreError(Exception):
    """The database cannot be used; the message says what to do."""


class Store:
    """Thread-safe access to one database file; open it once per process."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = utcnow):
        self.path = path
        self.clock = clock
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._local = threading.local()
        self._writer = threading.Lock()
        self._lock_path = path.with_name(path.name + ".lock")
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
        with self._one_writer():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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

    def check_writable(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _probe (x)")
            conn.execute("DROP TABLE _probe")

    # -- backup and clock (issue 7) -------------------------------------------------------
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

    def newest_timestamp(self) -> datetime | None:
        """The latest time this database recorded; a clock behind it has gone wrong."""
        row = self.conn.execute(
            "SELECT MAX(t) FROM (SELECT MAX(at) AS t FROM audit UNION ALL "
            "SELECT MAX(received_at) FROM submissions UNION ALL "
            "SELECT MAX(applied_at) FROM _migrations)").fetchone()
        return parse_iso(row[0]) if row and row[0] else None

    # -- submissions ------------------------------------------------------------------
    def add_submission(self, row: dict[str, Any], ciphertext: Path,
                       also: Callable[[], None] | None = None) -> None:
        """Commit a submission row and its ciphertext (copied from the file gpg wrote),
        plus whatever `also` writes (outbox, audit), in one transaction."""
        size = ciphertext.stat().st_size
        with self.transaction() as conn:
            # the row with a zero-filled blob of the right size, then the ciphertext streamed in
            cols = ", ".join(_quote(c) for c in row)
            marks = ", ".join("?" * len(row))
            cur = conn.execute(
                f"INSERT INTO submissions ({cols}, size, ciphertext) "  # noqa: S608 - quoted names
                f"VALUES ({marks}, ?, zeroblob(?))", [*row.values(), size, size])
            with conn.blobopen("submissions", "ciphertext", cur.lastrowid or 0) as blob, \
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
            # Continue from the recorded head, not from the last row left: after a cut-off
            # tail the next row still names the missing one, so `audit verify` sees it.
            last_id, prev = conn.execute("SELECT last_id, last_hash FROM audit_head").fetchone()
            row["id"] = last_id + 1
            row["prev_hash"] = prev
            row["hash"] = audit_hash(prev, row)
            conn.execute(_AUDIT_INSERT, [row[k] for k in _AUDIT_COLUMNS])

    def audit_rows(self, reference: str | None = None) -> list[dict[str, Any]]:
        if reference:
            cur = self.conn.execute("SELECT * FROM audit WHERE reference = ? ORDER BY id",
                                    (reference,))
        else:
            cur = self.conn.execute("SELECT * FROM audit ORDER BY id")
        return [dict(r) for r in cur]

    # == clinician area: accounts, sessions, tokens, notices, audit chain (issue 5) =======
    _USER_COLUMNS = ("email", "password_hash", "totp_secret", "totp_last_step", "recipients",
                     "forms", "disabled_at", "last_login_at")

    def user_add(self, username: str, password_hash: str, *, email: str,
                 recipients: list[str], forms: list[str]) -> int:
        now = iso(self.clock())
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO users (username, email, password_hash, recipients, forms, "
                "created_at, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (username, email, password_hash, json.dumps(recipients), json.dumps(forms),
                 now, now))
        return int(cur.lastrowid or 0)

    def user_row(self, *, username: str | None = None,
                 user_id: int | None = None) -> dict[str, Any] | None:
        if username is not None:
            row = self.conn.execute("SELECT * FROM users WHERE username = ?",
                                    (username,)).fetchone()
        else:
            row = self.conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return dict(row) if row else None

    def user_rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM users ORDER BY username")]

    def user_update(self, user_id: int, **fields: Any) -> None:
        bad = set(fields) - set(self._USER_COLUMNS)
        if bad:
            raise ValueError(f"not a user column: {', '.join(sorted(bad))}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE users SET {sets}, changed_at = ? WHERE id = ?",  # noqa: S608 - column names checked above
                         (*fields.values(), iso(self.clock()), user_id))

    def user_remove(self, user_id: int) -> None:
        """Delete a user; sessions, tokens and recovery codes go with it (cascade)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))

    def totp_claim_step(self, user_id: int, step: int) -> bool:
        """Accept TOTP time step `step` once: False if it (or a later one) was used."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE users SET totp_last_step = ? WHERE id = ? AND "
                               "totp_last_step < ?", (step, user_id, step))
        return cur.rowcount == 1

    def recovery_codes_set(self, user_id: int, hashes: list[str]) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
            conn.executemany("INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)",
                             [(user_id, h) for h in hashes])

    def recovery_code_use(self, user_id: int, code_hash: str) -> bool:
        with self.transaction() as conn:
            cur = conn.execute("UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND "
                               "code_hash = ? AND used_at IS NULL",
                               (iso(self.clock()), user_id, code_hash))
        return cur.rowcount == 1

    def recovery_codes_left(self, user_id: int) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? "
                                     "AND used_at IS NULL", (user_id,)).fetchone()[0])

    # login failures: counted in the database so every worker process sees them
    def login_failure(self, username: str, ip: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO login_failures (at, username, ip) VALUES (?, ?, ?)",
                         (iso(self.clock()), username, ip))

    def login_failures(self, since: datetime, *, username: str | None = None,
                       ip: str | None = None) -> int:
        col, value = ("username", username) if username is not None else ("ip", ip)
        return int(self.conn.execute(
            f"SELECT COUNT(*) FROM login_failures WHERE {col} = ? AND at >= ?",  # noqa: S608 - fixed names
            (value, iso(since))).fetchone()[0])

    def login_failures_clear(self, username: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM login_failures WHERE username = ?", (username,))

    # server-side sessions (the cookie holds a random id; only its hash is stored)
    def session_row(self, sid_hash: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM sessions WHERE sid_hash = ?",
                                (sid_hash,)).fetchone()
        return dict(row) if row else None

    def session_save(self, sid_hash: str, user_id: int | None, created_at: datetime,
                     seen_at: datetime, data: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO sessions (sid_hash, user_id, created_at, seen_at, data) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sid_hash) DO UPDATE SET "
                "user_id = excluded.user_id, seen_at = excluded.seen_at, data = excluded.data",
                (sid_hash, user_id, iso(created_at), iso(seen_at), json.dumps(data)))

    def session_delete(self, sid_hash: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE sid_hash = ?", (sid_hash,))

    def sessions_end(self, user_id: int) -> int:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount

    # API tokens (only a hash is stored; the token is shown once)
    def token_add(self, user_id: int, name: str, token_hash: str, hint: str) -> int:
        with self.transaction() as conn:
            cur = conn.execute("INSERT INTO api_tokens (user_id, name, token_hash, hint, "
                               "created_at) VALUES (?, ?, ?, ?, ?)",
                               (user_id, name, token_hash, hint, iso(self.clock())))
        return int(cur.lastrowid or 0)

    def token_rows(self, user_id: int) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT id, name, hint, created_at, last_used_at, revoked_at "
                                "FROM api_tokens WHERE user_id = ? ORDER BY id", (user_id,))
        return [dict(r) for r in cur]

    def token_owner(self, token_hash: str) -> tuple[int, int] | None:
        """(token id, user id) of a token that is not revoked, marking it used now."""
        with self.transaction() as conn:
            row = conn.execute("SELECT id, user_id FROM api_tokens WHERE token_hash = ? "
                               "AND revoked_at IS NULL", (token_hash,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
                         (iso(self.clock()), row[0]))
        return int(row[0]), int(row[1])

    def token_revoke(self, user_id: int, token_id: int | None = None) -> int:
        """Revoke one of the user's tokens (or all of them); returns how many."""
        sql = "UPDATE api_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL"
        args: list[Any] = [iso(self.clock()), user_id]
        if token_id is not None:
            sql += " AND id = ?"
            args.append(token_id)
        with self.transaction() as conn:
            return conn.execute(sql, args).rowcount

    # the inbox: who downloaded what, from the audit log
    def downloads(self, references: list[str]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {r: [] for r in references}
        for i in range(0, len(references), 500):
            chunk = references[i:i + 500]
            marks = ",".join("?" * len(chunk))
            cur = self.conn.execute(
                "SELECT reference, actor, at FROM audit WHERE action = 'downloaded' AND "  # noqa: S608 - placeholders only
                f"outcome = 'ok' AND reference IN ({marks}) ORDER BY id", chunk)
            for ref, actor, at in cur:
                out[ref].append((actor, at))
        return out

    def stream_ciphertext(self, reference: str) -> Iterator[bytes]:
        """The ciphertext in chunks (for a download response), never whole in memory."""
        conn = self.conn
        row = conn.execute("SELECT rowid FROM submissions WHERE reference = ? AND "
                           "ciphertext IS NOT NULL AND size > 0", (reference,)).fetchone()
        if not row:
            raise KeyError(reference)
        with conn.blobopen("submissions", "ciphertext", row[0], readonly=True) as blob:
            while chunk := blob.read(CHUNK):
                yield chunk

    # batched notifications of held submissions
    def notice_add(self, reference: str, form_id: str, received_at: datetime) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO held_notices (reference, form_id, received_at) "
                         "VALUES (?, ?, ?)", (reference, form_id, iso(received_at)))

    def notices_due(self, form_id: str, batch_minutes: int) -> list[dict[str, Any]] | None:
        """Unmailed notices of a form if its next batch is due now (and mark them
        mailed, with the batch time); None when nothing is due. Call inside a
        transaction with the enqueue, so a batch is mailed exactly once."""
        now = self.clock()
        with self.transaction() as conn:
            last = conn.execute("SELECT last_at FROM notice_batches WHERE form_id = ?",
                                (form_id,)).fetchone()
            if last and parse_iso(last[0]) + timedelta(minutes=batch_minutes) > now:
                return None
            rows = [dict(r) for r in conn.execute(
                "SELECT reference, received_at FROM held_notices WHERE form_id = ? AND "
                "mailed_at IS NULL ORDER BY received_at", (form_id,))]
            if not rows:
                return None
            conn.execute("UPDATE held_notices SET mailed_at = ? WHERE form_id = ? AND "
                         "mailed_at IS NULL", (iso(now), form_id))
            conn.execute("INSERT INTO notice_batches (form_id, last_at) VALUES (?, ?) "
                         "ON CONFLICT (form_id) DO UPDATE SET last_at = excluded.last_at",
                         (form_id, iso(now)))
        return rows

    def notice_forms(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT form_id FROM held_notices WHERE mailed_at IS NULL")]

    # the audit chain: head, anchors, streaming read, retention purge
    def audit_head(self) -> tuple[int, str]:
        row = self.conn.execute("SELECT last_id, last_hash FROM audit_head").fetchone()
        return int(row[0]), str(row[1])

    def audit_anchor(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM audit_anchor ORDER BY upto_id DESC "
                                "LIMIT 1").fetchone()
        return dict(row) if row else None

    def iter_audit(self) -> Iterator[dict[str, Any]]:
        """Every audit row in id order, read in pages (a log of years stays small in RAM)."""
        after = -1
        while True:
            rows = self.conn.execute("SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT 2000",
                                     (after,)).fetchall()
            if not rows:
                return
            for r in rows:
                yield dict(r)
            after = rows[-1]["id"]

    def purge_audit(self, before: datetime) -> tuple[int, int, str]:
        """Delete audit rows older than `before`, first recording an anchor (the last
        deleted id and hash) so the remaining chain still verifies; returns (rows
        deleted, anchor id, anchor hash) and logs the purge as an event of the chain."""
        with self.transaction() as conn:
            row = conn.execute("SELECT id, hash FROM audit WHERE at < ? ORDER BY id DESC "
                               "LIMIT 1", (iso(before),)).fetchone()
            if row is None:
                return 0, 0, ""
            upto_id, upto_hash = int(row[0]), str(row[1])
            conn.execute("INSERT INTO audit_anchor (at, upto_id, upto_hash) VALUES (?, ?, ?)",
                         (iso(self.clock()), upto_id, upto_hash))
            n = conn.execute("DELETE FROM audit WHERE id <= ?", (upto_id,)).rowcount
            self.audit("audit purged", detail=f"{n} rows up to #{upto_id} older than "
                                              f"{iso(before)[:10]}; anchor {upto_hash}")
        return n, upto_id, upto_hash

    def purge_sessions_and_failures(self, idle_before: datetime,
                                    failures_before: datetime) -> int:
        with self.transaction() as conn:
            n = conn.execute("DELETE FROM sessions WHERE seen_at < ?",
                             (iso(idle_before),)).rowcount
            conn.execute("DELETE FROM login_failures WHERE at < ?", (iso(failures_before),))
        return n

    def purge_metadata(self, before: datetime) -> int:
        """Forget submission rows whose ciphertext is long gone (kept as long as the audit
        log, so an export still names the form); and their notices."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM held_notices WHERE received_at < ?", (iso(before),))
            return conn.execute("DELETE FROM submissions WHERE ciphertext IS NULL AND "
                                "received_at < ?", (iso(before),)).rowcount

    # -- outbox: the durable mail queue (issue 4; see delivery.py) ---------------------
    def enqueue(self, kind: str, reference: str, recipients: list[str] | tuple[str, ...],
                payload: bytes = b"", form_id: str = "", *, message_id: str = "") -> int:
        """Queue one mail; joins the caller's transaction if there is one. `payload` is
        opaque here (the kind's builder reads it). Without `message_id` a random token
        is stored and delivery.message_id() turns it into a fixed Message-ID."""
        if not recipients:
            raise ValueError("a mail needs at least one recipient")
        now = iso(self.clock())
        mid = message_id or f"{kind}.{secrets.token_hex(12)}"
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO outbox (kind, reference, form_id, recipients, payload, message_id, "
                "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, reference, form_id, json.dumps(list(recipients)), payload, mid, now, now))
            self.audit("queued", reference=reference, form_id=form_id,
                       detail=f"{kind} mail to {len(recipients)} recipient(s)")
        return int(cur.lastrowid or 0)

    def claim_mails(self, owner: str, lease_seconds: int, limit: int = 1) -> list[OutboxMail]:
        """Lease up to `limit` due mails to `owner`, oldest first. The attempt is counted
        now, so a process killed mid-send still moves the backoff on. No fsync: a claim
        lost to a power cut only means a mail may be sent again."""
        now = self.clock()
        with self._relaxed() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE status = 'queued' AND next_attempt_at <= ? "
                "AND (lease_until IS NULL OR lease_until <= ?) "
                "ORDER BY next_attempt_at, id LIMIT ?", (iso(now), iso(now), limit)).fetchall()
            conn.executemany("UPDATE outbox SET lease_owner = ?, lease_until = ?, "
                             "attempts = attempts + 1, last_attempt_at = ? WHERE id = ?",
                             [(owner, iso(now + timedelta(seconds=lease_seconds)), iso(now),
                               row["id"]) for row in rows])
        return [_outbox_mail(row, attempts=row["attempts"] + 1) for row in rows]

    def renew_leases(self, owner: str, lease_seconds: int) -> int:
        """Extend every lease `owner` holds (during a long send); returns how many."""
        until = iso(self.clock() + timedelta(seconds=lease_seconds))
        with self._relaxed() as conn:
            cur = conn.execute("UPDATE outbox SET lease_until = ? WHERE lease_owner = ? AND "
                               "status = 'queued'", (until, owner))
        return cur.rowcount

    def mail_deferred(self, mail: OutboxMail, owner: str, next_at: datetime, error_class: str,
                      error: str) -> None:
        """Give the lease back and schedule the next try (a temporary failure)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, next_attempt_at = ?, "
                "error_class = ?, error = ? WHERE id = ? AND lease_owner = ? "
                "AND status = 'queued'", (iso(next_at), error_class, error, mail.id, owner))
            if cur.rowcount:
                self.audit("deferred", "retry", reference=mail.reference, form_id=mail.form_id,
                           detail=f"{mail.kind} mail, attempt {mail.attempts}: {error}; "
                                  f"next try {iso(next_at)}")

    def mail_done(self, mail: OutboxMail, status: str, detail: str, *, error_class: str = "",
                  also: Callable[[], None] | None = None) -> None:
        """Mark a mail `sent` (its payload is dropped) or `failed` (kept for a retry),
        audit it, and run `also` (the kind's own bookkeeping) in the same transaction."""
        if status not in ("sent", "failed"):
            raise ValueError(f"unknown final status {status!r}")
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET status = ?, lease_owner = NULL, lease_until = NULL, "
                "done_at = ?, error_class = ?, error = ? WHERE id = ?",
                (status, iso(self.clock()), error_class, detail if status == "failed" else "",
                 mail.id))
            if status == "sent":  # what was sent is not kept
                conn.execute("UPDATE outbox SET payload = NULL WHERE id = ?", (mail.id,))
            self.audit(status, "ok" if status == "sent" else "failed", reference=mail.reference,
                       form_id=mail.form_id, detail=f"{mail.kind} mail, attempt "
                                                    f"{mail.attempts}: {detail}")
            if also:
                also()

    def retry_mail(self, ident: str) -> list[OutboxMail]:
        """Queue failed mails again (by outbox id or reference), due now."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT id FROM outbox WHERE status = 'failed' AND "
                                "(CAST(id AS TEXT) = ? OR reference = ?)",
                                (ident, ident.upper())).fetchall()
            out = []
            for row in rows:
                conn.execute("UPDATE outbox SET status = 'queued', next_attempt_at = ?, "
                             "done_at = NULL WHERE id = ?", (iso(self.clock()), row["id"]))
                mail = self.outbox_mail(row["id"])
                self.audit("queued", actor="operator", reference=mail.reference,
                           form_id=mail.form_id, detail=f"{mail.kind} mail queued again")
                out.append(mail)
        return out

    def outbox_mail(self, mail_id: int) -> OutboxMail:
        row = self.conn.execute("SELECT * FROM outbox WHERE id = ?", (mail_id,)).fetchone()
        if row is None:
            raise KeyError(mail_id)
        return _outbox_mail(row, attempts=row["attempts"])

    def outbox_rows(self, statuses: tuple[str, ...] = ("queued", "failed"),
                    limit: int = 500) -> list[dict[str, Any]]:
        """Metadata of outbox rows (never the payload), oldest first."""
        cur = self.conn.execute(
            "SELECT id, kind, reference, form_id, status, created_at, attempts, "
            "next_attempt_at, last_attempt_at, lease_owner, lease_until, error_class, error, "
            "done_at FROM outbox WHERE status IN (SELECT value FROM json_each(?)) "
            "ORDER BY id LIMIT ?", (json.dumps(list(statuses)), limit))
        return [dict(r) for r in cur]

    def outbox_state(self, failed_since: datetime) -> dict[str, Any]:
        """What health checks report: queue length, oldest queued, latest error, failures."""
        conn = self.conn
        queued, oldest = conn.execute("SELECT COUNT(*), MIN(created_at) FROM outbox "
                                      "WHERE status = 'queued'").fetchone()
        failed = conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'failed' AND "
                              "done_at >= ?", (iso(failed_since),)).fetchone()[0]
        err = conn.execute("SELECT error_class, error, last_attempt_at FROM outbox WHERE "
                           "status = 'queued' AND error_class != '' "
                           "ORDER BY last_attempt_at DESC LIMIT 1").fetchone()
        return {"queued": queued, "oldest": parse_iso(oldest) if oldest else None,
                "failed": failed, "error_class": err[0] if err else "",
                "error": err[1] if err else "",
                "error_at": parse_iso(err[2]) if err and err[2] else None}

    def first_key_reminder(self, fingerprint: str, expires: str, days: int,
                           also: Callable[[], None]) -> bool:
        """Record the `days`-before reminder for a key and run `also` (queue the mail) in
        one transaction; False, doing nothing, if it was recorded before."""
        with self.transaction() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO key_reminders (fingerprint, expires, days, "
                               "sent_at) VALUES (?, ?, ?, ?)",
                               (fingerprint, expires, days, iso(self.clock())))
            if cur.rowcount:
                also()
        return bool(cur.rowcount)

    # -- public form protection (issue 3): used form tokens, rate-limit counters -------
    def use_form_token(self, token_id: str, expires_at: datetime) -> bool:
        """Record that a form token was posted; False if it was posted before (a replay).
        One INSERT decides, so two processes cannot both accept the same token."""
        now = self.clock().timestamp()
        with self.transaction() as conn:
            conn.execute("DELETE FROM used_form_tokens WHERE expires_at <= ?", (now,))
            cur = conn.execute("INSERT OR IGNORE INTO used_form_tokens (id, expires_at) "
                               "VALUES (?, ?)", (token_id, expires_at.timestamp()))
        return cur.rowcount == 1

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
            conn.execute("PRAGMA synchronous=FULL")

    def hit_counter(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add `amount` to a fixed-window counter that expires `expiry` seconds after its
        first hit; returns the new count."""
        now = self.clock().timestamp()
        with self._relaxed() as conn:
            row = conn.execute("UPDATE rate_limits SET count = count + ? WHERE key = ? AND "
                               "expires_at > ? RETURNING count", (amount, key, now)).fetchone()
            if row is not None:
                return int(row[0])
            conn.execute("DELETE FROM rate_limits WHERE expires_at <= ?", (now,))
            conn.execute("INSERT OR REPLACE INTO rate_limits (key, count, expires_at) "
                         "VALUES (?, ?, ?)", (key, amount, now + expiry))
        return amount

    def counter(self, key: str) -> tuple[int, float]:
        """A counter's value and expiry (Unix seconds); (0, now) when it has none."""
        now = self.clock().timestamp()
        row = self.conn.execute("SELECT count, expires_at FROM rate_limits WHERE key = ? AND "
                                "expires_at > ?", (key, now)).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, now)

    def clear_counters(self, key: str | None = None) -> int:
        """Drop one counter, or all of them; returns how many were dropped."""
        with self._relaxed() as conn:
            if key is None:
                cur = conn.execute("DELETE FROM rate_limits")
            else:
                cur = conn.execute("DELETE FROM rate_limits WHERE key = ?", (key,))
        return cur.rowcount

    # -- patient copies (issue 6; see copies.py) -----------------------------------------
    def add_copy(self, row: dict[str, Any]) -> None:
        """Store a new copy (joins the submission's transaction)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO copies (id, reference, form_id, lang, check_hash, code_mac, "
                "quick_hash, quick_until, created_at, expires_at, max_downloads, ciphertext, "
                "size) VALUES (:id, :reference, :form_id, :lang, :check_hash, :code_mac, "
                ":quick_hash, :quick_until, :created_at, :expires_at, :max_downloads, "
                ":ciphertext, :size)", {**row, "size": len(row["ciphertext"])})

    def copy_row(self, copy_id: str) -> dict[str, Any] | None:
        """A copy's metadata (never its ciphertext)."""
        row = self.conn.execute("SELECT * FROM copy_meta WHERE id = ?", (copy_id,)).fetchone()
        return dict(row) if row else None

    def copies_for(self, reference: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(
            "SELECT * FROM copy_meta WHERE reference = ?", (reference,))]

    def _drop_copy(self, conn: sqlite3.Connection, copy_id: str, state: str,
                   now: datetime) -> None:
        conn.execute("UPDATE copies SET state = ?, ciphertext = NULL, deleted_at = ? "
                     "WHERE id = ?", (state, iso(now), copy_id))

    def take_copy(self, copy_id: str, now: datetime) -> tuple[bytes, int, bool] | None:
        """Count one download and return (ciphertext, downloads so far, used up); the
        last allowed download deletes the ciphertext. None if nothing is left."""
        with self.transaction() as conn:
            row = conn.execute(
                "UPDATE copies SET downloads = downloads + 1 WHERE id = ? AND state = 'active' "
                "AND downloads < max_downloads AND ciphertext IS NOT NULL "
                "RETURNING ciphertext, downloads, max_downloads", (copy_id,)).fetchone()
            if row is None:
                return None
            used_up = row[1] >= row[2]
            if used_up:
                self._drop_copy(conn, copy_id, "used_up", now)
            return bytes(row[0]), int(row[1]), used_up

    def copy_wrong_code(self, copy_id: str, max_failures: int,
                        now: datetime) -> tuple[int, bool]:
        """Count a wrong pickup code; at `max_failures` the copy is locked and its
        ciphertext deleted. Returns (failures, locked)."""
        with self.transaction() as conn:
            row = conn.execute("UPDATE copies SET failures = failures + 1 WHERE id = ? AND "
                               "state = 'active' RETURNING failures", (copy_id,)).fetchone()
            if row is None:
                return max_failures, True
            locked = int(row[0]) >= max_failures
            if locked:
                self._drop_copy(conn, copy_id, "locked", now)
            return int(row[0]), locked

    def expire_copies(self, now: datetime, copy_id: str | None = None) -> list[dict[str, Any]]:
        """Delete the ciphertext of active copies past their expiry; returns their rows."""
        with self.transaction() as conn:
            sql = "SELECT * FROM copy_meta WHERE state = 'active' AND expires_at <= ?"
            args: list[Any] = [iso(now)]
            if copy_id is not None:
                sql += " AND id = ?"
                args.append(copy_id)
            rows = [dict(r) for r in conn.execute(sql, args)]
            for r in rows:
                self._drop_copy(conn, r["id"], "expired", now)
        return rows

    def forget_copies(self, before: datetime) -> int:
        """Remove the rows of copies deleted before `before` (they hold no content)."""
        with self.transaction() as conn:
            cur = conn.execute("DELETE FROM copies WHERE state != 'active' AND deleted_at < ?",
                               (iso(before),))
        return cur.rowcount
