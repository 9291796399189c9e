"""What the steps of a patient copy hand each other: the copy being made (`PendingCopy`),
a stored copy's state (`CopyInfo`) and an opened copy (`OpenedCopy`). The receipt for
the thank-you page (`CopyReceipt`) is the pipeline's answer (intake/pipeline.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..intake.pipeline import CopyDownload, CopyReceipt
from ..localtime import DEFAULT_TZ, iso
from .secret import b64e


@dataclass
class PendingCopy:
    """A copy made from the plaintext (`prepare`), stored by `record` in the submission's
    transaction."""

    copy_id: str
    secret: bytes
    code: str
    grant: str
    email: str
    lang: str
    reference: str
    ciphertext: bytes
    expires_at: datetime
    quick_until: datetime
    pgp_key: str = ""  # the patient's own public key (optional)
    pgp_ciphertext: str = ""  # the PDF mail encrypted to that key
    reply_code: str = ""  # printed in the PDF (a form with replies); never stored in clear

    def public(self, token: str, downloads: int, tz: str = DEFAULT_TZ) -> CopyReceipt:
        """What the thank-you page (and the JSON answer) may show the patient."""
        from .pdf import local_time

        return CopyReceipt(code=self.code, email=self.email, expires=iso(self.expires_at),
                           expires_text=local_time(self.expires_at, tz, self.lang),
                           downloads=downloads,
                           download=CopyDownload(url=f"/copy/{token}", key=b64e(self.secret),
                                                 grant=self.grant,
                                                 until=iso(self.quick_until)))


@dataclass(frozen=True)
class CopyInfo:
    copy_id: str
    reference: str
    form_id: str
    lang: str
    expires_at: datetime
    downloads_left: int
    tries_left: int


@dataclass(frozen=True)
class OpenedCopy:
    pdf: bytes
    filename: str
    info: CopyInfo
