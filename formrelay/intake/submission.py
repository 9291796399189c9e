"""The in-memory shape of one validated submission.

A `Submission` is the plaintext: it lives only in the memory of the request that
received it (uploads included, see web.request), is turned into one MIME document and
encrypted, and is then dropped. Nothing here is ever written to disk or logged.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

# No 0/O, 1/I/L or U: a reference is read aloud on the phone and typed by hand.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_reference() -> str:
    """A short, human-friendly reference such as FR-7K2M-9QXD (about 39 random bits)."""
    # one draw of 30**8 and its base-30 digits (eight secrets.choice calls cost more)
    n = secrets.randbelow(len(REFERENCE_ALPHABET) ** 8)
    chars = ""
    for _ in range(8):
        n, d = divmod(n, len(REFERENCE_ALPHABET))
        chars += REFERENCE_ALPHABET[d]
    return f"FR-{chars[:4]}-{chars[4:]}"


@dataclass(frozen=True)
class Answer:
    name: str
    label: str
    type: str
    value: str | list[str] | bool  # bool: a consent tick (language-neutral)

    def display(self) -> str:
        if isinstance(self.value, list):
            return ", ".join(self.value)
        if isinstance(self.value, bool):  # readers show it in their language (mime, pdf)
            return "yes" if self.value else ""
        return self.value


@dataclass
class Upload:
    field: str
    filename: str  # server-made: sanitised stem + the extension the content proved
    content_type: str
    size: int
    stream: IO[bytes]


@dataclass
class Submission:
    reference: str
    form_id: str
    form_title: str
    lang: str
    received_at: datetime
    answers: list[Answer]
    uploads: list[Upload] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "form": self.form_id,
            "lang": self.lang,  # the language the patient read the questions in
            "title": self.form_title,
            "received_at": self.received_at.isoformat(),
            "answers": {a.name: a.value for a in self.answers},
            "labels": {a.name: a.label for a in self.answers},
            "files": [{"field": u.field, "filename": u.filename, "size": u.size,
                       "content_type": u.content_type} for u in self.uploads],
        }
