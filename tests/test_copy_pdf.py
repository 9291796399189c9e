"""The copy's PDF (Unicode, wrapping, uploads listed) and the optional PGP/MIME copy to
the patient's own OpenPGP key, decrypted with GnuPG and RNP."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from formrelay import services
from formrelay.intake.submission import Answer, Submission, Upload
from formrelay.mail import outbox
from formrelay.patient_copy.pdf import Practice, copy_pdf

from .conftest import canary, post_form
from .helpers.copies import FIELDS, answers, pdf_text, thanks
from .keys import TestKey, gpg_decrypt, rnp_decrypt


def make_sub(*answers: Answer, uploads: list[Upload] | None = None,
             lang: str = "nl") -> Submission:
    return Submission("FR-TEST-2345", "intake", "Intake fysiotherapie", lang,
                      datetime(2026, 3, 1, 9, 30, tzinfo=UTC), list(answers), uploads or [])


def test_pdf_holds_every_answer_wrapped_and_unicode(logs: pytest.LogCaptureFixture) -> None:
    mark = canary()
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 4  # longer than a line
    long = " ".join(["Lange zin over de klachten van de laatste maanden"] * 40)
    up = Upload("letter", "verwijsbrief dr. Ünal.pdf", "application/pdf", 10, io.BytesIO())
    sub = make_sub(
        Answer("name", "Naam", "text", f"Łukasz Ødegård-Çelik {mark}"),
        Answer("script", "Schrift", "text", "Ελληνικά Русский ﬁ ß € ½ 😀"),
        Answer("odd", "Zeldzaam", "text", f"🦵 {mark}"),  # no font here has this glyph
        Answer("word", "Woord", "textarea", word),
        Answer("long", "Lang", "textarea", f"{long}\nTweede alinea."),
        Answer("symptoms", "Klachten", "checkboxes", ["hoofdpijn", "koorts"]),
        Answer("empty", "Leeg", "text", ""),
        Answer("letter", "Verwijsbrief", "file", ["verwijsbrief dr. Ünal.pdf"]),
        uploads=[up])
    pdf = copy_pdf(sub, Practice("Praktijk De Linde", "020 123 4567", "info@linde.nl"))
    assert pdf.startswith(b"%PDF")
    text = pdf_text(pdf)
    assert word in text.replace(" ", "")  # broken over lines, nothing lost
    for expected in (f"Łukasz Ødegård-Çelik {mark}", "Ελληνικά Русский", "ß € ½ 😀",
                     re.sub(r"\s+", " ", long), "Tweede alinea.", "hoofdpijn, koorts",
                     "verwijsbrief dr. Ünal.pdf", "FR-TEST-2345", "Intake fysiotherapie",
                     "Praktijk De Linde", "020 123 4567", "info@linde.nl", "01-03-2026 10:30"):
        assert expected in text, expected
    assert len(pypdf_pages(pdf)) >= 2  # the long answer flowed onto a second page
    # fpdf2 would log the characters it has no glyph for: those are answers
    assert not [r for r in logs.records if mark in r.getMessage() or "🦵" in r.getMessage()]


def pypdf_pages(pdf: bytes) -> list[Any]:
    import pypdf

    return list(pypdf.PdfReader(io.BytesIO(pdf)).pages)


def test_pdf_in_english() -> None:
    sub = make_sub(Answer("name", "Name", "text", "Jane"), lang="en")
    text = pdf_text(copy_pdf(sub, Practice("Practice", "020 1")))
    assert "Copy of your answers" in text and "Reference: FR-TEST-2345" in text
    sub_nl = make_sub(Answer("name", "Naam", "text", "Jan"))
    assert "Kopie van uw antwoorden" in pdf_text(copy_pdf(sub_nl, Practice("P", "1")))


# -- the patient's own OpenPGP key -------------------------------------------------------
def _pgp_app(make_app: Any) -> Any:
    return make_app(fields=FIELDS, patient_copy=True, patient_copy_pgp=True)


def test_pgp_copy_to_the_patients_own_key(make_app: Any, keys: dict[str, TestKey],
                                          tmp_path: Path) -> None:
    mark = canary()
    app = _pgp_app(make_app)
    client = app.test_client()
    assert 'name="_copy_key"' in client.get("/f/intake").get_data(as_text=True)
    patient = keys["bob"]
    page = thanks(post_form(client, {**answers(mark),
                                     "_copy_key": patient.public.read_text()}))
    r = app.extensions["formrelay"]
    outbox.deliver_pending(r.settings, r.store, kinds=services.mail_kinds())
    mails = [message_from_bytes(p.read_bytes(), policy=policy.default)
             for p in sorted((tmp_path / "mail").glob("*.eml"))]
    to_patient = [m for m in mails if "zoe@example.nl" in str(m["To"])]
    assert len(to_patient) == 2  # the link, and the encrypted copy
    enc = next(m for m in to_patient if m.get_content_type() == "multipart/encrypted")
    assert mark.encode() not in enc.as_bytes()
    parts = list(enc.iter_parts())
    assert parts[0].get_content_type() == "application/pgp-encrypted"
    ciphertext = parts[1].get_payload(decode=True)
    for decrypt in (gpg_decrypt, rnp_decrypt):
        inner = message_from_bytes(decrypt(patient, ciphertext), policy=policy.default)
        assert isinstance(inner, EmailMessage)
        assert inner.get_param("protected-headers") == "v1"
        pdf = next(p for p in inner.iter_attachments()
                   if p.get_content_type() == "application/pdf")
        text = pdf_text(pdf.get_payload(decode=True))
        assert f"Zoë Ünal-Øster {mark}" in text and page["reference"] in text
    # the outbox kept only ciphertext, and drops it once sent
    rows = r.store.conn.execute("SELECT payload, status FROM outbox WHERE kind = "
                                "'patient_copy_pgp'").fetchall()
    assert [tuple(x) for x in rows] == [(None, "sent")]
    actions = [a["action"] for a in r.store.audit.rows(page["reference"])]
    assert actions.count("copy mail sent") == 2


@pytest.mark.parametrize(("which", "message"), [
    ("secret", "privésleutel"),
    ("garbage", "BEGIN PGP PUBLIC KEY BLOCK"),
    ("expired", "niet versleuteld"),
    ("two", "precies één"),
])
def test_unusable_patient_keys_are_refused(make_app: Any, keys: dict[str, TestKey],
                                           which: str, message: str) -> None:
    app = _pgp_app(make_app)
    client = app.test_client()
    key = {"secret": lambda: keys["bob"].secret.read_text(),  # type: ignore[union-attr]
           "garbage": lambda: "hello, this is my key",
           "expired": lambda: keys["expired"].public.read_text(),
           "two": lambda: keys["bob"].public.read_text() + keys["alice"].public.read_text(),
           }[which]()
    r = post_form(client, {**answers(canary()), "_copy_key": key})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and 'id="e-_copy_key"' in html, html
    assert message in html
    assert not app.extensions["formrelay"].store.submissions.rows()



def test_missing_font_stops_start_up(make_app: Any, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
    from formrelay.config import ConfigError
    from formrelay.patient_copy import pdf

    monkeypatch.setattr(pdf, "FONT_DIRS", (tmp_path / "no-fonts",))
    pdf.font_files.cache_clear()
    try:
        with pytest.raises(ConfigError, match="fonts-dejavu-core"):
            make_app(fields=FIELDS, patient_copy=True)
        make_app(fields=FIELDS)  # a form without copies does not need the font
    finally:
        monkeypatch.undo()
        pdf.font_files.cache_clear()
