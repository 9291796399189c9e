"""The submission pipeline's parts: what a step is, and what it is given.

`Relay.submit` runs an ordered tuple of steps (services.build chooses them) at two
points of every submission: `prepare` on the validated plaintext, before it is dropped
(the patient's copy is made here), and `record` inside the submission's database
transaction, once the ciphertext is stored and the effective delivery is known (the
outbox mail, the held notice, the copy's row). What a step's `prepare` returned is
handed to its `record`, so a step keeps no state between submissions. A step that
raises stops the submission: nothing is stored. Only `record` may answer the patient,
and only with a `CopyReceipt`, the copy's part of the thank-you page (defined here, so
the relay need not know the patient_copy package that makes it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from ..settings import FormSpec
from .forms import Fields
from .submission import Submission

T = TypeVar("T")


@dataclass(frozen=True)
class CopyDownload:
    """The thank-you page's "download now" form: where it posts and what it sends."""

    url: str  # /copy/<token>
    key: str  # the link secret: the page needs it to open the copy without the mail
    grant: str  # the 15-minute pass that stands in for the pickup code
    until: str  # when that pass ends (ISO 8601)


@dataclass(frozen=True)
class CopyReceipt:
    """What the thank-you page (and the JSON answer) may show the patient of their copy:
    nothing else reaches the template."""

    code: str
    email: str
    expires: str  # ISO 8601
    expires_text: str  # the same, as the practice's local time
    downloads: int
    download: CopyDownload

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Posted:
    """A validated post, as `prepare` sees it."""

    sub: Submission
    spec: FormSpec
    fields: Fields  # everything posted, the control fields (copy tick, address, key) too
    ip: str  # the patient's access point, for audit events
    from_form: bool = True  # False: made outside the form (a patient's reply to an answer)
    # what a step made for the later ones and the thank-you page: "reply_code", which
    # the patient's copy prints, so the reply step runs before the copy's
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stored:
    """A submission inside its transaction, as `record` sees it. The reference may differ
    from the one `prepare` saw: the relay draws a new one when two collide."""

    sub: Submission
    spec: FormSpec
    delivery: str  # the effective delivery: "email", or "hold" (also for oversize mail)
    ip: str
    fingerprints: tuple[str, ...] = ()  # the keys it was encrypted to, in spec.recipients' order


class Step(Protocol[T]):
    """One part of the pipeline. `prepare` returns what `record` needs (or None)."""

    def prepare(self, posted: Posted) -> T: ...

    def record(self, stored: Stored, prepared: T) -> CopyReceipt | None: ...


class RecordOnly:
    """For a step that needs nothing from the plaintext: its `prepare` does nothing."""

    def prepare(self, posted: Posted) -> None:
        return None
