"""The database schema: every migration, in the order it runs.

Each step is registered with `@migration("000N_name")` and runs once, in the order
declared here; existing databases record the names in `_migrations`, so a released
step is never renamed, reordered or edited. A new step goes at the end of this file,
numbered from its feature's range (0001-0009 submissions and audit log, 0010-0019
outbox, 0020-0029 public form protection, 0030-0039 clinician area and audit chain,
0040-0049 patient copies, 0050-0059 compliance review), so fresh and upgraded databases
run the same steps.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlite_utils

from .audit import AUDIT_FIELDS, GENESIS, audit_hash
from .base import migration


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
    # Fixed-window rate-limit counters (intake/ratelimit.py), in the database so that every
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


# -- compliance review (migrations 0050-0059) -------------------------------------------
@migration("0050_audit_verified")
def _audit_verified(db: sqlite_utils.Database) -> None:
    # How far the audit chain was last verified (id and hash of that row, and the purge
    # anchor then in force): `formrelay check` and /healthz verify only what came after,
    # and that the rows up to it are still there with that row unchanged.
    db.conn.execute("CREATE TABLE audit_verified (one INTEGER PRIMARY KEY CHECK (one = 1), "
                    "upto_id INTEGER NOT NULL, upto_hash TEXT NOT NULL, "
                    "anchor_id INTEGER NOT NULL, at TEXT NOT NULL)")


# -- many practices (issue 11; migrations 0060-0069) ------------------------------------
@migration("0060_user_practice")
def _user_practice(db: sqlite_utils.Database) -> None:
    # The practice a clinician account belongs to: it sees that practice's forms only.
    db.conn.execute("ALTER TABLE users ADD COLUMN practice TEXT NOT NULL DEFAULT 'default'")
