"""English questions for English-speaking patients, and times in the practice's zone."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from formrelay.config import ConfigError, load_config
from formrelay.intake.payload import text_body
from formrelay.intake.submission import Answer, Submission
from formrelay.mail import notify
from formrelay.mail.kinds import recorded_for
from formrelay.patient_copy import pdf

from .area import Clock
from .conftest import ALL_FIELDS, ENV, make_config_dict, post_form, valid_answers, write_config
from .keys import TestKey, gpg_decrypt

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

WINTER = datetime(2026, 1, 15, 12, 5, tzinfo=UTC)
SUMMER = datetime(2026, 7, 15, 12, 5, tzinfo=UTC)


def english_fields() -> list[dict[str, Any]]:
    extra = {
        "name": {"label_en": "Your name", "help_en": "As on your insurance card"},
        "contact": {"label_en": "Contact by", "choices_en": ["phone", "e-mail"]},
        "symptoms": {"label_en": "Symptoms", "choices_en": ["headache", "fever", "other"]},
        "consent": {"label_en": "I agree to the processing."},
    }
    return [{**f, **extra.get(f["name"], {})} for f in ALL_FIELDS]


def english_app(make_app: Any, **kw: Any) -> Flask:
    app: Flask = make_app(fields=english_fields(), title_en="Physiotherapy intake",
                          notice_en="In an emergency call 112", notice="Bij spoed: bel 112",
                          **kw)
    return app


def test_english_page_shows_english_questions_and_dutch_page_is_unchanged(
        make_app: Any) -> None:
    client = english_app(make_app).test_client()
    en = client.get("/f/intake?lang=en").get_data(as_text=True)
    for text in ("Physiotherapy intake", "In an emergency call 112", "Your name",
                 "As on your insurance card", "Contact by", "headache", "fever",
                 "I agree to the processing."):
        assert text in en, text
    # the option shown is English, the value posted is the configured one
    assert re.search(r'value="hoofdpijn"[^>]*>\s*<label[^>]*>headache<', en), en
    assert "Intake fysiotherapie" not in en and "Contact via" not in en
    nl = client.get("/f/intake").get_data(as_text=True)
    for text in ("Intake fysiotherapie", "Bij spoed: bel 112", "Naam", "Contact via",
                 "hoofdpijn", "Ik ga akkoord met de verwerking."):
        assert text in nl, text
    for text in ("Physiotherapy intake", "Your name", "headache", "insurance card"):
        assert text not in nl, text


def test_english_post_stores_canonical_labels_and_values(make_app: Any,
                                                         keys: dict[str, TestKey]) -> None:
    clock = Clock(WINTER)
    app = english_app(make_app, clock=clock)
    client = app.test_client()
    r = post_form(client, {**valid_answers(), "_lang": "en", "contact": "telefoon",
                           "symptoms": ["hoofdpijn", "overig"]}, json_answer=True,
                  query="?lang=en")
    assert r.status_code == 200, r.get_data(as_text=True)
    ref = r.get_json()["reference"]
    plain = gpg_decrypt(keys["alice"],
                        app.extensions["formrelay"].store.submissions.ciphertext(ref))
    msg = message_from_bytes(plain, policy=policy.default)
    data = json.loads(next(p for p in msg.walk() if p.get_filename() == "answers.json")
                      .get_payload(decode=True))
    assert data["answers"]["contact"] == "telefoon"
    assert data["answers"]["symptoms"] == ["hoofdpijn", "overig"]
    assert data["labels"]["contact"] == "Contact via" and data["labels"]["name"] == "Naam"
    assert data["answers"]["consent"] is True  # see test_consent_answer_is_language_neutral
    body = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
    assert "Contact via:" in body and "Contact by" not in body
    assert "Taal van de patiënt: English" in body
    assert "Ontvangen: 15-01-2026 13:05 CET" in body  # the practice's time, labelled
    # an English option text is not an answer the form has
    r = post_form(client, {**valid_answers(), "_lang": "en", "contact": "phone"},
                  json_answer=True, query="?lang=en")
    assert r.status_code == 400


def test_consent_answer_is_language_neutral(make_app: Any, keys: dict[str, TestKey]) -> None:
    """answers.json says `true` for a ticked consent whatever language the patient read it
    in (which one is recorded beside it); the clinician's text says so in the form's."""
    app = english_app(make_app)
    client = app.test_client()
    seen = {}
    for lang in ("en", "nl"):
        r = post_form(client, {**valid_answers(), "_lang": lang}, json_answer=True,
                      query=f"?lang={lang}")
        assert r.status_code == 200, r.get_data(as_text=True)
        ct = app.extensions["formrelay"].store.submissions.ciphertext(r.get_json()["reference"])
        msg = message_from_bytes(gpg_decrypt(keys["alice"], ct), policy=policy.default)
        data = json.loads(next(p for p in msg.walk() if p.get_filename() == "answers.json")
                          .get_payload(decode=True))
        seen[lang] = data["answers"]["consent"]
        assert data["labels"]["consent"] == "Ik ga akkoord met de verwerking."
        assert data["lang"] == lang
        body = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
        assert "Ik ga akkoord met de verwerking.\n  ja\n" in body.replace("\r\n", "\n"), body
        assert "yes" not in body and "agree" not in body
    assert seen == {"en": True, "nl": True}


@pytest.mark.parametrize(("field", "message"), [
    ({"name": "contact", "type": "radio", "label": "Contact via",
      "choices": ["telefoon", "mail"], "choices_en": ["phone"]},
     r"forms\.intake\.fields\[0\]\.choices_en: has 1 options but choices has 2; give one "
     r"English text per option, in the same order as choices"),
    ({"name": "name", "type": "text", "label": "Naam", "choices_en": ["x"]},
     r"fields\[0\]\.choices_en: a text field has no options; remove choices_en"),
    ({"name": "name", "type": "text", "label": "Naam", "label_en": 3},
     r"fields\[0\]\.label_en: must be a string"),
])
def test_bad_english_texts_are_refused(tmp_path: Path, keys: dict[str, TestKey],
                                       field: dict[str, Any], message: str) -> None:
    cfg = make_config_dict(tmp_path / "data", keys, fields=[field])
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path / "c.toml", cfg), ENV)


def test_unknown_time_zone_is_refused(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    cfg = make_config_dict(tmp_path / "data", keys, server={"timezone": "Europe/Amsterdm"})
    with pytest.raises(ConfigError, match=r"server\.timezone: 'Europe/Amsterdm' is not a known "
                       r"time zone; use an IANA name such as"):
        load_config(write_config(tmp_path / "c.toml", cfg), ENV)


def test_times_shown_to_people_are_local_and_labelled(tmp_path: Path,
                                                      keys: dict[str, TestKey]) -> None:
    cfg = make_config_dict(tmp_path / "data", keys)
    settings = load_config(write_config(tmp_path / "c.toml", cfg), ENV)
    assert settings.server.timezone == "Europe/Amsterdam"
    items = [{"reference": "FR-AAAA-BBBB", "received_at": "2026-07-15T22:30:00.000000Z"}]
    _, mail = notify._body(settings, recorded_for(settings.practice_of("intake")), "Intake",
                           30, items, "en")
    # 22:30 UTC in summer is 00:30 the next day in Amsterdam; the deletion date follows it
    assert "received 2026-07-16 00:30 CEST, deleted after 2026-08-15" in mail
    assert "UTC" not in mail
    assert pdf.local_time(WINTER) == "15-01-2026 13:05 CET"
    assert pdf.local_time(SUMMER, "America/New_York") == "15-07-2026 08:05 EDT"
    sub = Submission(reference="FR-AAAA-BBBB", form_id="intake", form_title="Intake", lang="nl",
                     received_at=SUMMER, answers=[Answer("name", "Naam", "text", "x")])
    body = text_body(sub, "Praktijk", {"reference": "Ref", "received": "Received",
                                       "practice": "Practice"}, "Asia/Tokyo")
    assert "Received: 15-07-2026 21:05 JST" in body  # the Dutch rule: day-month-year


@pytest.mark.parametrize(("lang", "born", "date_rule"), [
    ("nl", "17-05-1980", r"\d\d-\d\d-\d{4} \d\d:\d\d CES?T"),
    ("en", "1980-05-17", r"\d{4}-\d\d-\d\d \d\d:\d\d CES?T")])
def test_one_date_rule_per_language_everywhere(make_app: Any, keys: dict[str, TestKey],
                                              lang: str, born: str, date_rule: str) -> None:
    """The clinician's text, the patient's PDF and the copy page write a date the same
    way for one language; the JSON part keeps ISO 8601."""
    from .helpers.copies import pdf_text, pick, thanks

    app = make_app(fields=english_fields(), title_en="Physiotherapy intake", lang=lang,
                   patient_copy=True)
    client = app.test_client()
    r = post_form(client, {**valid_answers(), "born": "1980-05-17", "_copy": "y",
                           "email": "anna@example.nl"})
    got = thanks(r)
    store = app.extensions["formrelay"].store
    plain = gpg_decrypt(keys["alice"], store.submissions.ciphertext(got["reference"]))
    msg = message_from_bytes(plain, policy=policy.default)
    text = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
    assert born in text and re.search(date_rule, text), text
    answers = next(p for p in msg.walk() if p.get_filename() == "answers.json")
    assert json.loads(answers.get_payload(decode=True))["answers"]["born"] == "1980-05-17"
    page = client.get(got["url"]).get_data(as_text=True)
    assert re.search(date_rule, page), page
    copy = pick(client, got["url"], got["key"], grant=got["grant"])
    assert copy.status_code == 200
    printed = pdf_text(copy.data)
    assert born in printed and re.search(date_rule, printed), printed


@pytest.mark.parametrize(("lang", "example", "file_hint"), [
    ("nl", "bijvoorbeeld 17-05-1980", "de tekst daarop staat in de taal van uw browser"),
    ("en", "for example 1980-05-17", "its text is in your browser's language")])
def test_date_and_file_inputs_get_a_hint_in_the_forms_language(
        make_app: Any, lang: str, example: str, file_hint: str) -> None:
    """The browser draws a date and a file input in its own language (mm/dd/yyyy,
    "Choose files"): a hint in the form's language says what to enter."""
    page = english_app(make_app).test_client().get(f"/f/intake?lang={lang}").get_data(
        as_text=True)
    for name in ("visit", "born"):
        hint = re.search(rf'<p class="help" id="t-{name}">([^<]+)</p>', page)
        assert hint and example in html.unescape(hint.group(1)), page
        assert re.search(rf'id="f-{name}"[^>]*aria-describedby="[^"]*t-{name}', page) or \
            re.search(rf'aria-describedby="[^"]*t-{name}[^"]*"[^>]*id="f-{name}"', page)
    hint = re.search(r'<p class="help" id="t-attachment">([^<]+)</p>', page)
    assert hint and file_hint in html.unescape(hint.group(1))
    assert "t-name" not in page  # text inputs speak the form's language already
