"""What a clinician may see and do with held submissions (no Flask).

A user sees held submissions of their own practice only, and of those the ones of a form
named for the user or sent to one of the user's recipients, all as recorded with the
submission when it was stored (`may_see`): a reload that moves a form to another
practice, or gives it other recipients, changes nobody's access to what was stored
before. Every object is checked that way: another's reference answers exactly like
one that does not exist, and the refusal is audited with who asked and from where.
Downloads and deletions are audited too; "who downloaded it when" is read back from the
audit log, so there is one record of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..audit_actions import AuditAction
from ..errors import NotFound, UserError
from ..intake.payload import message_id
from ..localtime import parse_iso
from ..mail import mime
from ..mail.kinds import submission_message
from ..mail.transport import write_eml
from ..settings import FormSpec, Settings
from ..store import Store
from .accounts import Accounts
from .user import User

REFERENCE = re.compile(r"^FR-[2-9A-Z]{4}-[2-9A-Z]{4}$")
ASSISTANT = "assistant"  # sees the list and triages; never fetches content
MAX_HANDLER = 60
NOT_HELD = "There is no held submission with this reference (it may have been processed " \
           "or deleted already)."


@dataclass(frozen=True)
class HeldItem:
    reference: str
    form_id: str
    form_title: str
    received_at: datetime
    size: int
    file_count: int
    delete_after: datetime
    downloads: tuple[tuple[str, datetime], ...]
    handler: str = ""  # who handles it (triage), a name the practice typed
    readers: tuple[str, ...] = ()  # the recipients it was encrypted to, as recorded


def may_see(user: User, row: dict[str, Any]) -> bool:
    """May `user` have this stored submission? Decided from its record alone: the
    practice it was stored for is the user's, and its form is named for the user or it
    was sent to one of the user's recipients."""
    if not row.get("practice") or row["practice"] != user.practice:
        return False
    recipients = set(json.loads(row.get("recipients") or "[]"))
    return row["form_id"] in user.forms or bool(recipients & set(user.recipients))


class Inbox:
    def __init__(self, settings: Settings, store: Store, accounts: Accounts):
        self.settings = settings
        self.store = store
        self.accounts = accounts

    def _item(self, row: dict[str, Any], downloads: list[tuple[str, str]],
              handler: str = "") -> HeldItem:
        fid = str(row["form_id"])
        spec = self._spec(row)
        received = parse_iso(str(row["received_at"]))
        days = int(row["keep_days"] or 0) or self.settings.retention_days(fid)
        return HeldItem(reference=str(row["reference"]), form_id=fid,
                        form_title=spec.title if spec else fid, received_at=received,
                        size=int(row["size"] or 0), file_count=int(row["file_count"] or 0),
                        delete_after=received + timedelta(days=days),
                        downloads=tuple((who, parse_iso(at)) for who, at in downloads),
                        handler=handler,
                        readers=tuple(json.loads(row.get("recipients") or "[]")))

    def _spec(self, row: dict[str, Any]) -> FormSpec | None:
        """The form as configured now, if it is still the recorded practice's."""
        spec = self.settings.form(str(row["form_id"]))
        return spec if spec and spec.practice == row["practice"] else None

    def items(self, user: User) -> list[HeldItem]:
        rows = [r for r in self.store.submissions.rows(status="held", practice=user.practice)
                if may_see(user, r)]
        refs = [str(r["reference"]) for r in rows]
        downloads, handlers = self.store.audit.downloads(refs), self.store.readers.triage_of(refs)
        return [self._item(r, downloads[ref], handlers.get(ref, ""))
                for r, ref in zip(rows, refs, strict=True)]

    def get(self, user: User, reference: str, *, action: str, ip: str) -> HeldItem:
        """The held item `reference` if `user` may have it; otherwise NotFound, audited as
        a refused `action` (the same answer whether it exists or belongs to others)."""
        ref = reference.strip().upper()
        if action in (AuditAction.DOWNLOADED, AuditAction.READ) and \
                self.store.readers.role_of(user.id) == ASSISTANT:
            self.store.audit.append(action, "refused", actor=user.actor, ip=ip,
                                    reference=ref if REFERENCE.match(ref) else "",
                                    detail="an assistant does not fetch content")
            raise UserError("As an assistant you see the list and mark who handles a "
                            "submission; opening or downloading it is for its readers.",
                            status=403)
        row = self.store.submissions.get(ref) if REFERENCE.match(ref) else None
        allowed = row is not None and may_see(user, row)
        if row is None or not allowed or row["status"] != "held" or not row["size"]:
            foreign = row is not None and row["practice"] != user.practice
            why = ("another practice's submission" if foreign else
                   "not one of the user's forms" if row is not None and not allowed else
                   f"status {row['status']}" if row is not None else "no such reference")
            # In the chain of the record's (recorded) practice, or the user's when there
            # is no record; an attempt on another practice's record goes to the user's
            # chain too, without that practice's reference.
            self.store.audit.append(action, "refused", actor=user.actor, ip=ip,
                                    reference=ref if REFERENCE.match(ref) else "",
                                    form_id=str(row["form_id"]) if row else "",
                                    detail=why if REFERENCE.match(ref) else "malformed reference")
            if foreign:
                self.store.audit.append(action, "refused", actor=user.actor, ip=ip, detail=why,
                                        practice=user.practice)
            raise NotFound(NOT_HELD)
        return self._item(row, self.store.audit.downloads([ref])[ref])

    def download(self, user: User, item: HeldItem, fmt: str, ip: str, via: str) -> None:
        self.store.audit.append(AuditAction.DOWNLOADED, actor=user.actor, ip=ip,
                                reference=item.reference,
                         form_id=item.form_id, detail=f"{fmt} via {via}")

    def asc_chunks(self, item: HeldItem) -> Iterator[bytes]:
        return self.store.submissions.stream(item.reference)

    def eml(self, item: HeldItem, user: User) -> mime.Streamed:
        """The held submission as a PGP/MIME mail (RFC 3156) a mail client opens and
        decrypts natively: generic outer headers, the real subject inside."""
        row = self.store.submissions.get(item.reference) or {}
        practice = self.settings.practice_or_default(str(row.get("practice") or user.practice))
        recorded = json.loads(row.get("recipients") or "[]")
        mine = self.settings.recipients
        # the recorded recipients still configured for that practice, else the user
        emails = [mine[r].email for r in recorded
                  if r in mine and mine[r].practice == practice.id] or [user.email]
        spec = self._spec(row) if row else None
        message = submission_message(
            self.settings, self.store, reference=item.reference, form_id=item.form_id,
            recipients=[e for e in emails if e], date=item.received_at,
            message_id=message_id(item.reference, self.settings.mail_domain),
            sender=practice.sender, lang=spec.lang if spec else "nl")
        return mime.Streamed(lambda dest: write_eml(message, dest), message.size)

    def note_handler(self, user: User, reference: str, handler: str, ip: str) -> HeldItem:
        """Triage: who handles a held submission (a name; empty clears it), audited."""
        item = self.get(user, reference, action=AuditAction.TRIAGED, ip=ip)
        handler = " ".join(handler.split())[:MAX_HANDLER]
        with self.store.transaction():
            self.store.readers.set_triage(item.reference, handler, user.actor)
            self.store.audit.append(AuditAction.TRIAGED, actor=user.actor, ip=ip,
                                    reference=item.reference, form_id=item.form_id,
                                    detail="handler noted" if handler else "handler cleared")
        return item

    def mark_processed(self, user: User, reference: str, ip: str) -> HeldItem:
        """Delete the ciphertext of a held item the user may have (audited)."""
        item = self.get(user, reference, action=AuditAction.DELETED, ip=ip)
        with self.store.transaction():
            row = self.store.submissions.get(item.reference)
            if row is None or row["status"] != "held":  # processed meanwhile by someone else
                raise NotFound(NOT_HELD)
            self.store.submissions.set_status(item.reference, "processed", drop_ciphertext=True)
            self.store.audit.append(AuditAction.DELETED, actor=user.actor, ip=ip,
                                    reference=item.reference,
                             form_id=item.form_id, detail="marked processed; ciphertext deleted")
        return item
