"""The audit log's storage: an append-only, hash-chained table of metadata events.

Every event names what happened to which reference, by whom and from where, never any
content. Each practice has its own chain: ids count per practice, and each row's hash
covers its id, its fields, its practice (the default practice's rows hash as they did
before there were several) and the previous row's hash; the recorded head of each chain
shows a cut-off tail, and anchors record where the retention purge cut the beginning,
so `formrelay audit verify` (formrelay.ops.audit) can still check the rest. An event is
written at the end of the transaction it belongs to: the practices' head rows are then
locked in one fixed order (on PostgreSQL `SELECT ... FOR UPDATE`; SQLite has one writer
anyway), so processes appending at once still make one chain and never deadlock on the
heads. Triggers in the schema refuse updates and any delete but the purge's.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..audit_actions import AuditAction
from ..localtime import iso
from .base import Concern

if TYPE_CHECKING:
    from . import Store

GENESIS = "0" * 64
AUDIT_FIELDS = ("at", "action", "outcome", "actor", "ip", "reference", "form_id", "detail")
DEFAULT_PRACTICE = "default"


def audit_hash(prev_hash: str, row: dict[str, Any]) -> str:
    # The row's id is chained too (since 0030): a removed or renumbered row breaks it.
    # So is its practice (since 0070), but for the default practice, whose rows hash as
    # before: a row moved to another practice's chain no longer matches either way.
    body: list[Any] = [prev_hash, int(row.get("id") or 0),
                       *[row.get(k) or "" for k in AUDIT_FIELDS]]
    practice = row.get("practice") or DEFAULT_PRACTICE
    if practice != DEFAULT_PRACTICE:
        body.append(practice)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_AUDIT_COLUMNS = ("id", *AUDIT_FIELDS, "prev_hash", "hash", "practice")
_AUDIT_INSERT = (f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "  # noqa: S608 - fixed names
                 f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})")


class AuditLog(Concern):
    """Append events, read them back, purge the oldest behind an anchor."""

    def __init__(self, store: Store):
        super().__init__(store)
        self._local = threading.local()  # this thread's transaction's events, not yet written

    def append(self, action: str, outcome: str = "ok", *, actor: str = "system", ip: str = "",
               reference: str = "", form_id: str = "", detail: str = "",
               practice: str | None = None) -> None:
        """Append one event to a practice's hash-chained audit log (metadata only, never
        content): to `practice` if given (an event about a form: its practice by
        `Settings.practice_of`), else to the chain `recorded_practice` finds.

        `action` must be an `AuditAction` (or its string): an action nobody documented
        cannot enter the log."""
        try:
            action = AuditAction(action).value  # the plain string goes into the hash chain
        except ValueError:
            raise ValueError(f"unknown audit action {action!r}; add it to AuditAction "
                             "(formrelay/audit_actions.py) and to the README's audit log"
                             ) from None
        row: dict[str, Any] = {"at": iso(self.clock()), "action": action, "outcome": outcome,
               "actor": actor,
               "ip": ip, "reference": reference, "form_id": form_id, "detail": detail,
               "practice": practice}

        def append() -> None:
            with self.transaction():
                row["practice"] = practice or self.recorded_practice(
                    form_id=form_id, reference=reference, actor=actor)
                self._pending_audit().append(row)

        self.store.retried(append)

    def _pending_audit(self) -> list[dict[str, Any]]:
        pending: list[dict[str, Any]] | None = getattr(self._local, "audit", None)
        if pending is None:
            pending = self._local.audit = []
        return pending

    def _drop(self) -> None:
        """The outermost transaction ended: its events were written or rolled back."""
        self._local.audit = []

    def _flush(self) -> None:
        """Append the transaction's events, chain by chain in the order of the practices'
        names, just before COMMIT. Each chain's head row is locked while its rows are
        added (on PostgreSQL `SELECT ... FOR UPDATE`), so concurrent appenders of one
        practice take turns; taking the heads last and always in one order means two
        transactions never wait for each other's heads (a deadlock, issue 16.5: a
        delivery pass marking mails of noord and zuid sent while another marked zuid's
        and noord's), and a head is held only for the commit, not the whole
        transaction."""
        pending = self._pending_audit()
        if not pending:
            return
        self._local.audit = []
        lock = self.engine.for_update
        head_sql = f"SELECT last_id, last_hash FROM audit_head WHERE practice = ?{lock}"  # noqa: S608 - fixed text
        conn = self.conn
        for practice in sorted({r["practice"] for r in pending}):
            # Continue from the recorded head, not from the last row left: after a cut-off
            # tail the next row still names the missing one, so `audit verify` sees it.
            head = conn.execute(head_sql, (practice,)).fetchone()
            if head is None:  # the practice's first event
                conn.execute("INSERT INTO audit_head (practice, last_id, last_hash) "
                             "VALUES (?, 0, ?) ON CONFLICT (practice) DO NOTHING",
                             (practice, GENESIS))
                head = conn.execute(head_sql, (practice,)).fetchone()
            last_id, prev = int(head[0]), str(head[1])
            for row in (r for r in pending if r["practice"] == practice):
                last_id += 1
                row["id"] = last_id
                row["prev_hash"] = prev
                row["hash"] = prev = audit_hash(prev, row)
                conn.execute(_AUDIT_INSERT, [row[k] for k in _AUDIT_COLUMNS])
            conn.execute("UPDATE audit_head SET last_id = ?, last_hash = ? WHERE practice = ?",
                         (last_id, prev, practice))

    def recorded_practice(self, *, form_id: str = "", reference: str = "",
                          actor: str = "") -> str:
        """The practice whose chain an event goes to when the caller names none, from
        what is recorded, never from the configuration (callers that know an event's
        form pass `practice=`, by `Settings.practice_of`; the README's "Audit log" says
        the same): an event about a stored submission goes to the practice recorded with
        it; one about a submission no longer stored to the chain that already holds its
        events; a clinician's own event (`user:<name>`) to the account's practice;
        anything else (the operator's, unknown names, the system's) to `default`."""
        if reference:
            row = self.conn.execute("SELECT practice FROM submissions WHERE reference = ?",
                                    (reference,)).fetchone()
            if row and row[0]:
                return str(row[0])
            if form_id:
                for pending in self._pending_audit():  # this transaction's, not yet written
                    if pending["reference"] == reference and pending["form_id"] == form_id:
                        return str(pending["practice"])
                row = self.conn.execute("SELECT practice FROM audit WHERE reference = ? AND "
                                        "form_id = ? ORDER BY at LIMIT 1",
                                        (reference, form_id)).fetchone()
                if row:
                    return str(row[0])
        if actor.startswith("user:"):
            row = self.conn.execute("SELECT practice FROM users WHERE username = ?",
                                    (actor[len("user:"):],)).fetchone()
            if row and row[0]:
                return str(row[0])
        return DEFAULT_PRACTICE

    def rows(self, reference: str | None = None,
             practice: str | None = None) -> list[dict[str, Any]]:
        """Events of one reference (or all), of one practice (or all), chain by chain."""
        sql, args = "SELECT * FROM audit WHERE 1=1", []
        if reference:
            sql += " AND reference = ?"
            args.append(reference)
        if practice:
            sql += " AND practice = ?"
            args.append(practice)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY practice, id", args)]

    def practices(self) -> list[str]:
        """The practices that have an audit chain (the default one always)."""
        names = {r[0] for r in self.conn.execute("SELECT practice FROM audit_head")}
        return sorted(names | {DEFAULT_PRACTICE})

    # the chain of one practice: head, anchors, streaming read, retention purge
    def head(self, practice: str = DEFAULT_PRACTICE) -> tuple[int, str]:
        row = self.conn.execute("SELECT last_id, last_hash FROM audit_head WHERE practice = ?",
                                (practice,)).fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def anchor(self, practice: str = DEFAULT_PRACTICE) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM audit_anchor WHERE practice = ? "
                                "ORDER BY upto_id DESC LIMIT 1", (practice,)).fetchone()
        return dict(row) if row else None

    def iter(self, after: int = -1,
             practice: str = DEFAULT_PRACTICE) -> Iterator[dict[str, Any]]:
        """A practice's audit rows (after id `after`) in id order, read in pages (a log
        of years stays small in RAM)."""
        while True:
            rows = self.conn.execute("SELECT * FROM audit WHERE practice = ? AND id > ? "
                                     "ORDER BY id LIMIT 2000", (practice, after)).fetchall()
            if not rows:
                return
            for r in rows:
                yield dict(r)
            after = rows[-1]["id"]

    def row(self, row_id: int, practice: str = DEFAULT_PRACTICE) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM audit WHERE practice = ? AND id = ?",
                                (practice, row_id)).fetchone()
        return dict(row) if row else None

    def count(self, after: int, upto: int, practice: str = DEFAULT_PRACTICE) -> int:
        """How many of a practice's rows have an id in (after, upto]."""
        return int(self.conn.execute("SELECT COUNT(*) FROM audit WHERE practice = ? AND "
                                     "id > ? AND id <= ?", (practice, after, upto)).fetchone()[0])

    # how far a chain was verified (formrelay.ops.audit.verify, incremental)
    def verified(self, practice: str = DEFAULT_PRACTICE) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT upto_id, upto_hash, anchor_id, at FROM audit_verified "
                                "WHERE practice = ?", (practice,)).fetchone()
        return dict(row) if row else None

    def record_verified(self, upto_id: int, upto_hash: str, anchor_id: int,
                        practice: str = DEFAULT_PRACTICE) -> None:
        """Remember that the chain verified up to row `upto_id`; never moves back."""
        with self.transaction(relaxed=True) as conn:
            conn.execute(
                "INSERT INTO audit_verified (practice, upto_id, upto_hash, anchor_id, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (practice) DO UPDATE SET "
                "upto_id = excluded.upto_id, upto_hash = excluded.upto_hash, "
                "anchor_id = excluded.anchor_id, at = excluded.at "
                "WHERE excluded.upto_id >= audit_verified.upto_id",
                (practice, upto_id, upto_hash, anchor_id, iso(self.clock())))

    def purge(self, before: datetime) -> tuple[int, int, str]:
        """Delete audit rows older than `before`, in every practice's chain first
        recording an anchor (the last deleted id and hash) so the remaining chain still
        verifies, and logging the purge as an event of that chain. Returns (rows deleted
        in all, and the default practice's anchor id and hash, or 0 and "")."""
        total, anchor = 0, (0, "")
        for practice in self.practices():
            with self.transaction() as conn:
                self.store.lock(f"audit {practice}")
                row = conn.execute("SELECT id, hash FROM audit WHERE practice = ? AND at < ? "
                                   "ORDER BY id DESC LIMIT 1", (practice, iso(before))).fetchone()
                if row is None:
                    continue
                upto_id, upto_hash = int(row[0]), str(row[1])
                conn.execute("INSERT INTO audit_anchor (at, upto_id, upto_hash, practice) "
                             "VALUES (?, ?, ?, ?)", (iso(self.clock()), upto_id, upto_hash,
                                                     practice))
                n = conn.execute("DELETE FROM audit WHERE practice = ? AND id <= ?",
                                 (practice, upto_id)).rowcount
                self.append(AuditAction.AUDIT_PURGED, practice=practice,
                           detail=f"{n} rows up to #{upto_id} older than {iso(before)[:10]}; "
                                  f"anchor {upto_hash}")
            total += n
            if practice == DEFAULT_PRACTICE:
                anchor = (upto_id, upto_hash)
        return total, *anchor

    # the inbox: who downloaded what, from the audit log
    def downloads(self, references: list[str]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {r: [] for r in references}
        for i in range(0, len(references), 500):
            chunk = references[i:i + 500]
            marks = ",".join("?" * len(chunk))
            cur = self.conn.execute(
                "SELECT reference, actor, at FROM audit WHERE action = 'downloaded' AND "  # noqa: S608 - placeholders only
                f"outcome = 'ok' AND reference IN ({marks}) ORDER BY at, id", chunk)
            for ref, actor, at in cur:
                out[ref].append((actor, at))
        return out
