"""The clinician's answer encrypted in the clinician's browser (issue 19: "where the
clinician reads in the browser, the answer is encrypted in the clinician's browser"),
in Debian's Chromium: the answer page carries the patient's reply certificate, the page
encrypts the text and a file with the vendored OpenPGP.js under the strict CSP, and the
post carries only the ciphertext; the server checks it is one OpenPGP message to
exactly that key; the patient reads the text and the file with the code, and Sequoia's
sq decrypts the stored answer too. Ciphertext to another key, or cut short, is refused
and nothing is stored."""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import sync_playwright

from .area import Browser, Clock, add_user, audit, cheap_hashing, totp_at
from .conftest import canary, post_form
from .helpers.answers import decrypt_with_tools, parts, private_key
from .helpers.browser import _first_login, _live
from .helpers.replies import FIELDS, read, send_form
from .helpers.servers import ARGS, CHROMIUM
from .helpers.uploads import encrypt_binary
from .keys import TestKey

# Chromium; answers are stored on PostgreSQL in test_replies and test_answer_files
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def live(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[tuple[Flask, str]]:
    yield from _live(make_app, monkeypatch, fields=FIELDS, replies=True)


def test_answer_and_file_encrypted_in_the_clinicians_browser(
        live: tuple[Flask, str], tmp_path: Path) -> None:
    app, base = live
    client = app.test_client()
    r = post_form(client, {"name": "Zoë", "email": "", "question": "Uitslag?"},
                  json_answer=True, headers={"Origin": base})
    reference, code = r.get_json()["reference"], r.get_json()["reply_code"]
    add_user(tmp_path, "anna", "--recipient", "alice")
    mark = canary()
    pdf = b"%PDF-1.7\n" + f"uitslag {mark}\n".encode() + secrets.token_bytes(200_000)
    (tmp_path / "uitslag.pdf").write_bytes(pdf)
    (tmp_path / "virus.pdf").write_bytes(b"MZ\x90\x00 not a pdf")
    posted: list[bytes] = []
    problems: list[str] = []
    inner = app.wsgi_app

    def keep_answer_posts(environ: dict[str, Any], start: Any) -> Any:
        """What reached the server, as it arrived (the browser's post of a file made in
        the page is not visible to Playwright)."""
        if environ["REQUEST_METHOD"] == "POST" and \
                environ["PATH_INFO"].startswith("/clinician/answer/"):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            posted.append(body)
            environ["wsgi.input"] = io.BytesIO(body)
        return inner(environ, start)

    app.wsgi_app = keep_answer_posts  # type: ignore[method-assign]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context().new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" and
                "favicon.ico" not in m.location.get("url", "") else None)
        _first_login(page, base)
        page.goto(f"{base}/clinician/answer/{reference}")
        assert "in deze browser versleuteld" in page.inner_text("#answer-where")
        page.fill("#answer", f"Uw uitslag is goed. {mark}\nGroet, dr. Jansen")
        # a file that is not what its name says is refused in the page: nothing is sent
        page.set_input_files("#answer-files", [str(tmp_path / "virus.pdf")])
        page.click("#answer-form button[type=submit]")
        page.wait_for_selector("#answer-problem:not([hidden])")
        assert "virus.pdf" in page.inner_text("#answer-problem") and posted == []
        page.set_input_files("#answer-files", [str(tmp_path / "uitslag.pdf")])
        page.click("#answer-form button[type=submit]")
        page.wait_for_url(f"{base}/clinician/")
        assert reference in page.inner_text(".flash")
        browser.close()
    assert problems == []
    # what the server received: the ciphertext only
    [body] = posted
    assert b'name="answer_pgp"' in body and b'name="answer"' not in body
    assert mark.encode() not in body and pdf[:200] not in body
    assert audit(app, "answer written")[-1]["detail"].endswith("sealed in the browser")

    page_html = read(client, reference, code).get_data(as_text=True)
    assert f"Uw uitslag is goed. {mark}" in page_html and "uitslag.pdf" in page_html
    got = client.post("/r/file?lang=en", data={"reference": reference, "code": code,
                                                "n": "0"})
    assert got.status_code == 200 and got.data == pdf
    stored = app.extensions["formrelay"].store.replies.get(reference)["answer"]
    for tool, plain in decrypt_with_tools(private_key(app, reference, code), stored,
                                          tmp_path / "t").items():
        text, files = parts(plain)
        assert text.startswith(f"Uw uitslag is goed. {mark}") and \
            files == {"uitslag.pdf": pdf}, tool


def test_ciphertext_not_to_the_patients_key_is_refused(
        make_app: Callable[..., Flask], tmp_path: Path, keys: dict[str, TestKey],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock)
    client = app.test_client()
    reference, code = send_form(client, email="")
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    to_practice = encrypt_binary(app, b"MIME-Version: 1.0\r\n\r\nHallo",
                                 [keys["alice"].fingerprint])
    row = app.extensions["formrelay"].store.replies.get(reference)
    from formrelay.replies import letter

    to_patient = letter.seal(row["public_key"], letter.compose("Hallo", []),
                             app.extensions["formrelay"].settings.tmp_dir, 30)
    for bad in (to_practice, to_patient[:-20], to_patient + b"\x00", b"just text"):
        b.get(f"/clinician/answer/{reference}")
        data: Any = {"answer_pgp": (io.BytesIO(bad), "answer.pgp")}
        r = b.post(f"/clinician/answer/{reference}?lang=en", data,
                   content_type="multipart/form-data")
        assert r.status_code == 422 and "not encrypted for the patient" in r.get_data(
            as_text=True)
    row = app.extensions["formrelay"].store.replies.get(reference)
    assert row["state"] == "waiting" and row["answer"] is None
    assert not audit(app, "answer written")
    assert "not answered yet" in read(client, reference, code).get_data(as_text=True)
