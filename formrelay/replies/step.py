"""The reply code's part of the relay's pipeline (`ReplyStep`, wired in services.build
before the patient's copy): with `replies = true` the code and its key pair are made
in `prepare`, before the copy's PDF is built (the PDF prints the code), and stored in
the submission's transaction by `record`, so a stored submission and its reply key
come and go together. The code itself is never stored: only the key it unlocks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..clinician import hashing
from . import secret
from .answers import Answers

if TYPE_CHECKING:
    from ..intake.pipeline import CopyReceipt, Posted, Stored

log = logging.getLogger(__name__)
NO_CODE = "-"  # received, but no code could be made: the thank-you page says call them


@dataclass(frozen=True)
class PendingReply:
    pair: secret.NewPair
    email: str
    lang: str


@dataclass(frozen=True)
class ReplyStep:
    answers: Answers

    def prepare(self, posted: Posted) -> PendingReply | None:
        if not posted.spec.replies or not posted.from_form:  # not for a patient's reply
            return None
        try:
            pair = self.answers.new_pair()
        except hashing.Busy:  # the form is still received: without a code
            log.error("form %s: no reply code for %s (hashing busy)", posted.spec.id,
                      posted.sub.reference)
            posted.notes["reply_code"] = NO_CODE
            return None
        posted.notes["reply_code"] = secret.shown_code(pair.code)
        field = next((f.name for f in posted.spec.fields if f.type == "email"), "")
        email = (posted.fields.get(field) or [""])[0].strip() if field else ""
        return PendingReply(pair, email, posted.sub.lang)

    def record(self, stored: Stored, prepared: PendingReply | None) -> CopyReceipt | None:
        if prepared is not None:  # the reference as stored: the key is bound to it
            self.answers.record_pair(stored.sub.reference, stored.spec, stored.fingerprints,
                                     prepared.email, prepared.lang, prepared.pair)
        return None
