"""Uploaded documents as the clinician sees them: listed by reference, downloaded as
the ciphertext they arrived as (no Flask).

A clinician sees a file when it belongs to their practice and one of their recipients
is among those it was encrypted to, as recorded when the link was made (the recipient
ids, and for rows from before they were recorded the fingerprints), so a later reload,
a key rotation included, changes nothing. Every download is audited; a refused one
too, without saying whether the file exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..audit_actions import AuditAction
from ..clinician.user import User
from ..errors import UserError
from ..localtime import parse_iso
from ..settings import Settings
from ..store import Store
from .receive import FILE_ID


@dataclass(frozen=True)
class HeldUpload:
    id: str
    reference: str
    size: int
    how: str  # "browser" (binary OpenPGP) or "form" (ASCII-armoured by gpg here)
    received_at: object

    @property
    def filename(self) -> str:
        ext = "asc" if self.how == "form" else "pgp"
        return f"{self.reference}-{self.id[:8]}.{ext}"


class HeldUploads:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    def _mine(self, user: User, row: dict[str, object]) -> bool:
        if row["practice"] != user.practice:
            return False
        # one of the user's recipients, as recorded: a rotated key hides nothing
        if set(user.recipients) & set(row.get("recipient_ids") or ()):  # type: ignore[call-overload]
            return True
        fprs = {self.settings.recipients[r].fingerprint for r in user.recipients
                if r in self.settings.recipients} - {""}  # a browser recipient's: none
        return bool(fprs & set(row["recipients"]))  # type: ignore[call-overload]

    def _item(self, row: dict[str, object]) -> HeldUpload:
        return HeldUpload(str(row["id"]), str(row["reference"]), int(row["size"]),  # type: ignore[call-overload]
                          str(row["how"]), parse_iso(str(row["completed_at"])))

    def items(self, user: User) -> list[HeldUpload]:
        """The user's received files, newest reference first."""
        rows = [r for r in self.store.uploads.files_of(practice=user.practice)
                if self._mine(user, r)]
        return sorted((self._item(r) for r in rows), key=lambda i: str(i.received_at),
                      reverse=True)

    def download(self, user: User, file_id: str, ip: str) -> tuple[HeldUpload, Iterator[bytes]]:
        row = self.store.uploads.file(file_id) if FILE_ID.fullmatch(file_id) else None
        if row is None or row["state"] != "complete" or not self._mine(user, row):
            self.store.audit.append(AuditAction.UPLOAD_DOWNLOADED, "refused",
                                    actor=f"user:{user.username}", ip=ip, practice=user.practice,
                                    detail=f"file {file_id[:8]}" if FILE_ID.fullmatch(file_id)
                                    else "malformed file id")
            raise UserError("No such document.", status=404)
        item = self._item(row)
        self.store.audit.append(AuditAction.UPLOAD_DOWNLOADED, actor=f"user:{user.username}", ip=ip,
                                reference=item.reference, practice=str(row["practice"]),
                                detail=f"file {file_id[:8]} ({item.size} bytes)")
        return item, self.store.uploads.chunks(file_id)


def purge(settings: Settings, store: Store, now: datetime) -> int:
    """Delete received documents past their retention: their form's retention_days
    (the default for a link made for a practice), counted from their arrival."""
    shortest = min([settings.retention_days(f) for f in settings.forms] +
                   [settings.retention_days("")])
    gone = 0
    for row in store.uploads.old_files(now - timedelta(days=shortest)):
        days = settings.retention_days(str(row["form_id"]))
        if parse_iso(str(row["completed_at"])) > now - timedelta(days=days):
            continue
        with store.transaction():
            if store.uploads.delete_file(str(row["id"]), now, give_back=False):
                store.audit.append(AuditAction.UPLOAD_DELETED, reference=str(row["reference"]),
                                   form_id=str(row["form_id"]), practice=str(row["practice"]),
                                   detail=f"file {str(row['id'])[:8]}: past {days} days' retention")
                gone += 1
    return gone
