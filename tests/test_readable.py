"""What patients and clinicians read, found by walking through `formrelay demo`: labels
that end a sentence keep their own punctuation in the error summary and in the
clinician's mail, the copy's PDF writes dates the Dutch way and a consent once, and the
clinician's inbox counts "1 bestand"."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask

from formrelay.intake.payload import text_body
from formrelay.intake.submission import Answer, Submission
from formrelay.patient_copy.pdf import Practice, copy_pdf

from .area import Browser, Clock, add_user, cheap_hashing, totp_at
from .conftest import encode_multipart, form_token, post_form
from .helpers.copies import pdf_text

FIELDS = [
    {"name": "name", "type": "text", "label": "Naam", "required": True},
    {"name": "why", "type": "textarea", "label": "Waarvoor komt u?", "required": True},
    {"name": "born", "type": "birthdate", "label": "Geboortedatum"},
    {"name": "photo", "type": "file", "label": "Foto", "accept": ["png"]},
    {"name": "consent", "type": "consent", "label": "Ik ga akkoord met de verwerking."},
]
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63f8cf000000030101001826dd8d"
                    "0000000049454e44ae426082")


def test_error_summary_keeps_the_labels_own_punctuation(make_app: Callable[..., Flask]
                                                        ) -> None:
    r = post_form(make_app(fields=FIELDS).test_client(), {})
    summary = r.get_data(as_text=True).split('id="error-summary"', 1)[1].split("</div>")[0]
    items = [re.sub(r"<[^>]+>", "", li).strip() for li in re.findall(r"<li>(.*?)</li>",
                                                                       summary, re.S)]
    assert "Naam: Dit veld is vereist." in items
    assert "Waarvoor komt u? Dit veld is vereist." in items
    assert any(i.startswith("Ik ga akkoord met de verwerking. Vink") for i in items), items
    assert not [i for i in items if "?:" in i or ".:" in i]


def _sub(*answers: Answer) -> Submission:
    return Submission("FR-TEST-2345", "intake", "Intake", "nl",
                      datetime(2026, 3, 1, 9, 30, tzinfo=UTC), list(answers))


def test_clinician_text_and_patient_pdf_read_well() -> None:
    sub = _sub(Answer("why", "Waarvoor komt u?", "textarea", "Rugpijn"),
               Answer("born", "Geboortedatum", "birthdate", "1980-02-03"),
               Answer("consent", "Ik ga akkoord met de verwerking.", "consent", True))
    text = text_body(sub, "Praktijk", {"reference": "Referentie", "received": "Ontvangen",
                                       "practice": "Praktijk"})
    assert "\nWaarvoor komt u?\n  Rugpijn" in text and "?:" not in text
    assert "\nGeboortedatum:\n  03-02-1980" in text  # as every Dutch date; JSON keeps ISO
    pdf = pdf_text(copy_pdf(sub, Practice("Praktijk De Linde", "020 123 4567")))
    assert "Geboortedatum 03-02-1980" in pdf and "1980-02-03" not in pdf
    assert pdf.count("Ik ga akkoord met de verwerking.") == 1
    assert "Ik ga akkoord met de verwerking. Ja" in pdf


def test_inbox_counts_one_file_in_the_singular(make_app: Callable[..., Flask],
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, clock=clock)
    client = app.test_client()
    body = {**form_token(client), "name": "Kees", "why": "Een plek", "consent": "y",
            "photo": (io.BytesIO(PNG), "plek.png", "image/png")}
    r = client.post("/f/intake", data=encode_multipart(body),
                    content_type="multipart/form-data; boundary=frtestboundary",
                    headers={"Accept": "application/json", "Origin": "http://localhost"})
    assert r.get_json()["ok"], r.get_json()
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    page = re.sub(r"\s+", " ", b.get("/clinician/").get_data(as_text=True))
    assert "· 1 bestand<" in page and "1 bestanden" not in page
