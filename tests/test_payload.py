"""The plaintext MIME document that is encrypted per submission, read back by a MIME
parser the way a mail client would: headers, the readable text, the answers as JSON."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from formrelay.intake.payload import payload_parts, text_body
from formrelay.intake.submission import Answer, Submission, Upload

LABELS = {"reference": "Referentie", "received": "Ontvangen", "practice": "Praktijk"}


def make_submission(title: str = "Intake fysiotherapie", **kw: object) -> Submission:
    answers = [
        Answer("naam", "Naam", "text", "Jeroen Brünhilde"),
        Answer("klacht", "Klacht", "textarea",
               "Pijn in de knie 🦵, ça va\r\nregel twee = niet \"leeg\"\t \r\n\r\n" + "x" * 200),
        Answer("klachten", "Klachten", "checkboxes", ["hoofdpijn", "koorts"]),
        Answer("leeg", "Leeg", "text", ""),
    ]
    return Submission(reference="FR-7K2M-9QXD", form_id="intake", form_title=title, lang="nl",
                      received_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC), answers=answers,
                      **kw)  # type: ignore[arg-type]


def build(sub: Submission, subject: str = "", recipients: tuple[str, ...] =
          ("dokter@praktijk.test",)) -> EmailMessage:
    raw = b"".join(payload_parts(sub, sender="formulieren@praktijk.test",
                                 recipients=list(recipients),
                                 subject=subject or f"{sub.form_title} - {sub.reference}",
                                 domain="praktijk.test", practice="Praktijk De Linde",
                                 labels=LABELS))
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage) and not msg.defects
    return msg


def test_payload_reads_back_like_the_submission() -> None:
    sub = make_submission()
    msg = build(sub)
    assert msg.get_content_type() == "multipart/mixed"
    assert msg.get_param("protected-headers") == "v1"
    assert msg["Subject"] == "Intake fysiotherapie - FR-7K2M-9QXD"
    assert msg["Message-ID"] == "<fr-7k2m-9qxd@praktijk.test>"
    assert msg["To"] == "dokter@praktijk.test"
    text, answers = msg.get_payload()  # type: ignore[misc]
    assert text.get_content_type() == "text/plain"
    assert text.get_content_charset() == "utf-8"
    body = text.get_content().replace("\r\n", "\n")
    expected = "\n".join(text_body(sub, "Praktijk De Linde", LABELS).splitlines()) + "\n"
    assert body == expected
    assert "Pijn in de knie 🦵, ça va" in body and "Jeroen Brünhilde" in body
    assert answers.get_filename() == "answers.json"
    assert json.loads(answers.get_content()) == json.loads(json.dumps(sub.as_json()))


def test_accented_long_subject_and_many_recipients_are_encoded() -> None:
    title = "Aanmelden als nieuwe patiënt bij Huisartsenpraktijk De Linde te ’s-Hertogenbosch"
    recipients = tuple(f"dokter{i}@huisartsenpraktijk-de-linde.example" for i in range(5))
    msg = build(make_submission(title), recipients=recipients)
    assert msg["Subject"] == f"{title} - FR-7K2M-9QXD"
    assert [a.addr_spec for a in msg["To"].addresses] == list(recipients)


def test_attachment_travels_as_its_bytes() -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 300
    sub = make_submission(uploads=[Upload("brief", "verwijzing dr Ünal.pdf", "application/pdf",
                                          len(pdf), io.BytesIO(pdf))])
    msg = build(sub)
    part = next(p for p in msg.walk() if p.get_filename() == "verwijzing dr Ünal.pdf")
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == pdf


@pytest.mark.parametrize("subject", ["Intake\r\nBcc: iemand@example.org", "Intake\nX: y"])
def test_header_injection_is_refused(subject: str) -> None:
    with pytest.raises(ValueError):
        build(make_submission(), subject=subject)


@pytest.mark.parametrize("title", ["Intake fysiotherapie – ë", "ë" * 60, "🦵" * 25 + "ça",
                                   "Vragenlijst voor nieuwe patiënten ’s-Hertogenbosch " * 3])
def test_non_ascii_subject_is_encoded_words_a_client_reads(title: str) -> None:
    msg = build(make_submission(title))
    assert msg["Subject"] == f"{title} - FR-7K2M-9QXD"
    raw = b"".join(payload_parts(make_submission(title), sender="formulieren@praktijk.test",
                                 recipients=["dokter@praktijk.test"], subject=title,
                                 domain="praktijk.test", practice="P", labels=LABELS))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and all(len(line) <= 78 for line in head.split(b"\r\n"))


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 114, 1000, 57 * 1024 + 3])
def test_base64_lines_are_the_standard_ones(size: int) -> None:
    """The parts' base64 (one C call, then 76-character CRLF lines) is byte for byte what
    the standard library's MIME encoder writes."""
    import base64
    import os

    from formrelay.intake.payload import _b64

    data = os.urandom(size)
    assert _b64(data) == base64.encodebytes(data).replace(b"\n", b"\r\n")
