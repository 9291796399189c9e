"""The patient copy's part of the relay's pipeline (`CopyStep`, wired in
services.build) and the start-up check that the PDF's fonts are there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import ConfigError
from ..settings import Settings
from .copies import Copies
from .values import PendingCopy

if TYPE_CHECKING:
    from ..intake.pipeline import CopyReceipt, Posted, Stored


def check_fonts(settings: Settings) -> None:
    """ConfigError at start-up, not when a patient ticks the box, if a form offers a
    copy and the PDF's fonts are missing."""
    with_copy = [f for f in settings.forms.values() if f.patient_copy]
    if with_copy:
        from .pdf import PdfError, font_files

        try:
            font_files()
        except PdfError as exc:
            raise ConfigError(f"{settings.path}: forms.{with_copy[0].id}.patient_copy: "
                              f"{exc}") from None


@dataclass(frozen=True)
class CopyStep:
    """The patient's copy in the relay's pipeline: built and encrypted before the
    plaintext is dropped, stored and its mail queued in the submission's transaction."""

    copies: Copies

    def prepare(self, posted: Posted) -> PendingCopy | None:
        code = posted.notes.get("reply_code", "")
        return self.copies.prepare(posted.sub, posted.spec, posted.fields,
                                   reply_code="" if code == "-" else code)

    def record(self, stored: Stored, prepared: PendingCopy | None) -> CopyReceipt | None:
        if prepared is None:
            return None
        token = self.copies.record(stored.sub, stored.spec, prepared, ip=stored.ip)
        return prepared.public(token, self.copies.max_downloads,
                               self.copies.settings.practice_of(stored.spec.id).timezone)
