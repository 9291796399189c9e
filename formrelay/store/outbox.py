"""The outbox's storage: the durable queue every mail leaves formrelay through.

A mail is a row queued in the transaction of whatever caused it; a sender leases due
rows (so one process sends each), then marks them deferred, sent or failed, each
audited. Once sent, a row keeps metadata only (no payload, no addresses); sent and
failed rows are deleted when their form's retention has passed. Also the record of
which key-expiry reminders went out. mail/outbox.py is the worker that sends.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..audit_actions import AuditAction
from ..localtime import iso, parse_iso
from .base import Concern

PURGE_BATCH = 500  # outbox rows deleted per transaction


@dataclass(frozen=True)
class OutboxMail:
    """One claimed outbox row, as handed to a kind's builder (see mail/outbox.py)."""

    id: int
    kind: str
    reference: str
    form_id: str
    recipients: tuple[str, ...]
    payload: bytes
    message_id: str
    created_at: datetime
    attempts: int
    practice: str = ""  # whose mail it is (recorded when queued): its audit chain
    context: str = ""  # sealed: the sender's details as recorded (mail/kinds.py Recorded)
    error_class: str = ""  # why the last attempt failed ("" = none yet)


def _addresses(recipients: str) -> tuple[str, ...]:
    """The addresses of a queued or failed mail; a sent one keeps only "2 recipients"."""
    return tuple(json.loads(recipients)) if recipients.startswith("[") else ()


def _outbox_mail(row: Any, attempts: int) -> OutboxMail:
    return OutboxMail(id=row["id"], kind=row["kind"], reference=row["reference"],
                      form_id=row["form_id"], recipients=_addresses(row["recipients"]),
                      payload=row["payload"] or b"", message_id=row["message_id"],
                      created_at=parse_iso(row["created_at"]), attempts=attempts,
                      practice=row["practice"] or "", context=row["context"] or "",
                      error_class=row["error_class"] or "")


class Outbox(Concern):
    """Queue, lease, mark and list mails; purge finished ones."""

    def enqueue(self, kind: str, reference: str, recipients: list[str] | tuple[str, ...],
                payload: bytes = b"", form_id: str = "", *, message_id: str = "",
                practice: str = "", context: str = "") -> int:
        """Queue one mail; joins the caller's transaction if there is one. `payload` is
        opaque here (the kind's builder reads it). Without `message_id` a random token
        is stored and mail.kinds.message_id() turns it into a fixed Message-ID.
        `practice` is whose mail it is (callers know it: a form's by
        `Settings.practice_of`; by default what `audit.recorded_practice` finds): its
        audit chain, for good. `context` is opaque here too: the
        sender's details as the kind recorded them, sealed (mail/kinds.py)."""
        if not recipients:
            raise ValueError("a mail needs at least one recipient")
        now = iso(self.clock())
        mid = message_id or f"{kind}.{secrets.token_hex(12)}"
        with self.transaction() as conn:
            # the row records whose mail it is (its submission's practice), for good
            practice = practice or self.store.audit.recorded_practice(form_id=form_id,
                                                                      reference=reference)
            cur = conn.execute(
                "INSERT INTO outbox (kind, reference, form_id, recipients, payload, message_id, "
                "created_at, next_attempt_at, practice, context) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (kind, reference, form_id, json.dumps(list(recipients)), payload, mid, now, now,
                 practice, context))
            mail_id = int(cur.fetchone()[0])
            self.store.audit.append(AuditAction.QUEUED, reference=reference, form_id=form_id,
                       practice=practice or None,
                       detail=f"{kind} mail to {len(recipients)} recipient(s)")
        return mail_id

    def claim(self, owner: str, lease_seconds: int, limit: int = 1) -> list[OutboxMail]:
        """Lease up to `limit` due mails to `owner`, oldest first. The attempt is counted
        now, so a process killed mid-send still moves the backoff on. No fsync: a claim
        lost to a power cut only means a mail may be sent again. On PostgreSQL the rows
        are locked with `FOR UPDATE SKIP LOCKED`: workers claiming at once each get other
        mails, none waits for another (SQLite has one writer at a time)."""
        now = self.clock()
        skip = self.engine.skip_locked
        with self.transaction(relaxed=True) as conn:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE status = 'queued' AND next_attempt_at <= ? "  # noqa: S608 - fixed text
                "AND (lease_until IS NULL OR lease_until <= ?) AND accepted IS NULL "
                f"ORDER BY next_attempt_at, id LIMIT ?{skip}",
                (iso(now), iso(now), limit)).fetchall()
            conn.executemany("UPDATE outbox SET lease_owner = ?, lease_until = ?, "
                             "attempts = attempts + 1, last_attempt_at = ? WHERE id = ?",
                             [(owner, iso(now + timedelta(seconds=lease_seconds)), iso(now),
                               row["id"]) for row in rows])
        return [_outbox_mail(row, attempts=row["attempts"] + 1) for row in rows]

    def accepted(self, owner: str, accepted: list[tuple[int, str]]) -> None:
        """Record that the relay accepted these mails ((outbox id, where) pairs), in a
        short transaction of its own that touches nothing but the leased rows, before the
        bookkeeping of `done`: should that be rolled back, no claim sends them
        again (`claim_accepted` finishes them instead). No fsync, like a claim: losing
        this to a power cut only means a mail may be sent again."""
        if not accepted:
            return
        with self.transaction(relaxed=True) as conn:
            conn.executemany("UPDATE outbox SET accepted = ? WHERE id = ? AND lease_owner = ? "
                             "AND status = 'queued'",
                             [(where, mail_id, owner) for mail_id, where in accepted])

    def claim_accepted(self, owner: str, lease_seconds: int,
                       limit: int) -> list[tuple[OutboxMail, str]]:
        """Lease up to `limit` mails the relay accepted whose bookkeeping never got done
        (its transaction failed, or the process died right after), with where they were
        accepted: they are to be marked sent, never sent again."""
        now = self.clock()
        skip = self.engine.skip_locked
        with self.transaction(relaxed=True) as conn:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE status = 'queued' AND accepted IS NOT NULL "  # noqa: S608 - fixed text
                f"AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?{skip}",
                (iso(now), limit)).fetchall()
            conn.executemany("UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE id = ?",
                             [(owner, iso(now + timedelta(seconds=lease_seconds)), row["id"])
                              for row in rows])
        return [(_outbox_mail(row, attempts=row["attempts"]), str(row["accepted"]))
                for row in rows]

    def renew_leases(self, owner: str, lease_seconds: int) -> int:
        """Extend every lease `owner` holds (during a long send); returns how many."""
        until = iso(self.clock() + timedelta(seconds=lease_seconds))
        with self.transaction(relaxed=True) as conn:
            cur = conn.execute("UPDATE outbox SET lease_until = ? WHERE lease_owner = ? AND "
                               "status = 'queued'", (until, owner))
        return cur.rowcount

    def deferred(self, mail: OutboxMail, owner: str, next_at: datetime, error_class: str,
                 error: str) -> None:
        """Give the lease back and schedule the next try (a temporary failure)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, next_attempt_at = ?, "
                "error_class = ?, error = ? WHERE id = ? AND lease_owner = ? "
                "AND status = 'queued'", (iso(next_at), error_class, error, mail.id, owner))
            if cur.rowcount:
                self.store.audit.append(AuditAction.DEFERRED, "retry", reference=mail.reference,
                           form_id=mail.form_id, practice=mail.practice or None,
                           detail=f"{mail.kind} mail, attempt {mail.attempts}: {error}; "
                                  f"next try {iso(next_at)}")

    def done(self, mail: OutboxMail, status: str, detail: str, *,
             error_class: str = "") -> None:
        """Mark a mail `sent` (its payload and addresses are dropped) or `failed` (kept
        for a retry), and audit it; joins the caller's transaction, where the caller
        does the kind's own bookkeeping."""
        if status not in ("sent", "failed"):
            raise ValueError(f"unknown final status {status!r}")
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET status = ?, lease_owner = NULL, lease_until = NULL, "
                "done_at = ?, error_class = ?, error = ? WHERE id = ?",
                (status, iso(self.clock()), error_class, detail if status == "failed" else "",
                 mail.id))
            if status == "sent":  # what was sent, and to whom (a patient's address), is not kept
                n = len(mail.recipients)
                conn.execute("UPDATE outbox SET payload = NULL, recipients = ?, context = '' "
                             "WHERE id = ?",
                             (f"{n} recipient{'' if n == 1 else 's'}", mail.id))
            self.store.audit.append(status, "ok" if status == "sent" else "failed",
                                    reference=mail.reference,
                       form_id=mail.form_id, practice=mail.practice or None,
                       detail=f"{mail.kind} mail, attempt {mail.attempts}: {detail}")

    def retry(self, ident: str | None) -> list[OutboxMail]:
        """Queue failed mails again, due now: by outbox id or reference, or (None) every
        failed mail."""
        with self.transaction() as conn:
            if ident is None:
                rows = conn.execute("SELECT id FROM outbox WHERE status = 'failed' "
                                    "ORDER BY id").fetchall()
            else:
                rows = conn.execute("SELECT id FROM outbox WHERE status = 'failed' AND "
                                    "(CAST(id AS TEXT) = ? OR reference = ?)",
                                    (ident, ident.upper())).fetchall()
            how = "" if ident is not None else " (outbox --retry-failed)"
            out = []
            now = iso(self.clock())
            for row in rows:
                # a fresh start: attempts and the give-up clock (smtp.give_up_days) count
                # from now, or a mail that once gave up would give up at its next hiccup
                conn.execute("UPDATE outbox SET status = 'queued', next_attempt_at = ?, "
                             "created_at = ?, attempts = 0, done_at = NULL WHERE id = ?",
                             (now, now, row["id"]))
                mail = self.mail(row["id"])
                self.store.audit.append(AuditAction.QUEUED, actor="operator",
                                        reference=mail.reference,
                           form_id=mail.form_id, practice=mail.practice or None,
                           detail=f"{mail.kind} mail #{mail.id} queued again{how}")
                out.append(mail)
        return out

    def waiting(self, message_id_prefix: str) -> bool:
        """Is a mail whose stored message id starts with this still queued?"""
        row = self.conn.execute("SELECT 1 FROM outbox WHERE status = 'queued' AND "
                                "substr(message_id, 1, ?) = ? LIMIT 1",
                                (len(message_id_prefix), message_id_prefix)).fetchone()
        return row is not None

    def mail(self, mail_id: int) -> OutboxMail:
        row = self.conn.execute("SELECT * FROM outbox WHERE id = ?", (mail_id,)).fetchone()
        if row is None:
            raise KeyError(mail_id)
        return _outbox_mail(row, attempts=row["attempts"])

    def rows(self, statuses: tuple[str, ...] = ("queued", "failed"),
             limit: int = 500) -> list[dict[str, Any]]:
        """Metadata of outbox rows (never the payload), oldest first."""
        marks = ", ".join("?" * len(statuses))
        cur = self.conn.execute(
            "SELECT id, kind, reference, form_id, status, created_at, attempts, "  # noqa: S608 - placeholders only
            "next_attempt_at, last_attempt_at, lease_owner, lease_until, error_class, error, "
            f"done_at FROM outbox WHERE status IN ({marks}) "
            "ORDER BY id LIMIT ?", (*statuses, limit))
        return [dict(r) for r in cur]

    def state(self, failed_since: datetime) -> dict[str, Any]:
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

    def first_key_reminder(self, fingerprint: str, expires: str, days: int) -> bool:
        """Record the `days`-before reminder for a key; False, doing nothing, if it was
        recorded before. Joins the caller's transaction, where the caller queues the
        mail when this says True."""
        with self.transaction() as conn:
            cur = conn.execute("INSERT INTO key_reminders (fingerprint, expires, days, "
                               "sent_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               (fingerprint, expires, days, iso(self.clock())))
        return bool(cur.rowcount)

    def purge(self, cutoffs: Mapping[str, datetime],
              default: datetime) -> list[dict[str, Any]]:
        """Delete sent and failed mails finished before their form's cutoff (`default`
        for mail of no configured form, such as the operator's), each deletion audited;
        returns what was deleted. Works in batches so intake is not held up long."""
        cuts = json.dumps({form_id: iso(at) for form_id, at in cutoffs.items()})
        pairs = self.engine.json_pairs()
        gone: list[dict[str, Any]] = []
        while True:
            with self.transaction() as conn:
                rows = [dict(r) for r in conn.execute(
                    f"WITH cut AS (SELECT key AS form_id, value AS before FROM {pairs}) "  # noqa: S608 - fixed text
                    "SELECT o.id, o.kind, o.reference, o.form_id, o.status, o.done_at, "
                    "o.practice "
                    "FROM outbox AS o LEFT JOIN cut ON cut.form_id = o.form_id "
                    "WHERE o.status IN ('sent', 'failed') "
                    "AND o.done_at < COALESCE(cut.before, ?) ORDER BY o.id LIMIT ?",
                    (cuts, iso(default), PURGE_BATCH))]
                for r in rows:
                    conn.execute("DELETE FROM outbox WHERE id = ?", (r["id"],))
                    self.store.audit.append(AuditAction.DELETED, reference=r["reference"],
                                            form_id=r["form_id"],
                               practice=r["practice"] or None,
                               detail=f"retention: record of {r['status']} {r['kind']} mail "
                                      f"#{r['id']} (done {r['done_at'][:10]}) deleted")
            gone += rows
            if len(rows) < PURGE_BATCH:
                return gone
