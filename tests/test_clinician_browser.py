"""The clinician area in a real browser (Debian's Chromium via Playwright): the `__Host-`
cookie is accepted (http://localhost is a secure context), the QR code renders under the
CSP (`img-src data:`, no script), and first login, download and "mark processed" work
with nothing the CSP had to block."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyotp
import pytest
from flask import Flask
from playwright.sync_api import sync_playwright

from .area import COOKIE, PASSWORD, add_user, answers
from .conftest import post_form, valid_answers
from .helpers.browser import _first_login, _live
from .helpers.servers import ARGS, CHROMIUM
from .keys import TestKey, gpg_decrypt

pytestmark = pytest.mark.sqlite_only  # Chromium; the store is checked elsewhere



@pytest.fixture
def live(make_app: Callable[..., Flask], tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, str]]:
    yield from _live(make_app, monkeypatch)


# a Dutch compound word does not wrap: the inbox must still fit a phone
LONG_TITLE = "Arbeidsongeschiktheidsverzekeringsaanvraagformulier voor nieuwe patiënten"


@pytest.fixture
def live_long_title(make_app: Callable[..., Flask],
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, str]]:
    yield from _live(make_app, monkeypatch, title=LONG_TITLE)


def test_first_login_download_and_processed_in_chromium(live: tuple[Flask, str],
                                                         tmp_path: Path,
                                                         keys: dict[str, TestKey]) -> None:
    app, base = live
    add_user(tmp_path, "anna", "--recipient", "alice")
    r = post_form(app.test_client(), valid_answers("browser"), json_answer=True,
                  headers={"Origin": base})
    ref = r.get_json()["reference"]
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(accept_downloads=True).new_page()
        page.on("console", lambda m: problems.append(f"{m.text} {m.location.get('url')}")
                if m.type == "error" and "favicon.ico" not in m.location.get("url", "")
                else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                if r.status >= 400 else None)
        page.goto(f"{base}/clinician/login")
        page.get_by_label("Gebruikersnaam").fill("anna")
        page.get_by_label("Wachtwoord").fill(PASSWORD)
        page.get_by_role("button", name="Volgende").click()
        page.wait_for_url("**/clinician/enrol")
        qr = page.locator("img.qr")
        assert qr.evaluate("img => img.complete && img.naturalWidth > 0")
        secret = page.locator("#secret").inner_text().replace(" ", "")
        page.get_by_label("Code", exact=True).fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Bevestigen").click()
        assert page.locator("#recovery-codes li").count() == 10
        cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.get_by_role("link", name="Ik heb ze bewaard, verder").click()
        row = page.locator(f"#row-{ref}")
        assert "Intake fysiotherapie" in row.inner_text()
        with page.expect_download() as dl:
            row.get_by_role("link", name=".asc").click()
        path = dl.value.path()
        assert dl.value.suggested_filename == f"{ref}.asc"
        got = answers(gpg_decrypt(keys["alice"], Path(path).read_bytes()))
        assert got["answers"]["name"] == "Jeroen Brünhilde browser"
        page.goto(f"{base}/clinician/")
        page.locator(f"#row-{ref}").get_by_role("link", name="Markeren als verwerkt").click()
        page.get_by_role("button", name="Ja, verwijder het van de server").click()
        page.wait_for_url(f"{base}/clinician/")
        assert page.locator(f"#row-{ref}").count() == 0
        assert "gemarkeerd als verwerkt" in page.locator(".flash").inner_text()
        page.get_by_role("button", name="Uitloggen (anna)").click()
        page.wait_for_url("**/clinician/login")
        browser.close()
    assert problems == []
    assert app.extensions["formrelay"].store.submissions.get(ref)["status"] == "processed"


def test_inbox_does_not_scroll_sideways_on_a_360_px_phone(
        live_long_title: tuple[Flask, str], tmp_path: Path) -> None:
    app, base = live_long_title
    add_user(tmp_path, "anna", "--recipient", "alice")
    refs = [post_form(app.test_client(), valid_answers(f"telefoon {i}"), json_answer=True,
                      headers={"Origin": base}).get_json()["reference"] for i in range(3)]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 360, "height": 740},
                                      accept_downloads=True)
        page = context.new_page()
        _first_login(page, base)
        page.wait_for_url(f"{base}/clinician/")
        with page.expect_download():  # a "downloaded by" line in the table too
            page.locator(f"#row-{refs[0]}").get_by_role("link", name=".eml").click()
        page.goto(f"{base}/clinician/")
        for ref in refs:
            row = page.locator(f"#row-{ref}")
            assert LONG_TITLE in row.inner_text()
            assert row.get_by_role("link", name="Markeren als verwerkt").is_visible()
        widths = page.evaluate("() => [document.scrollingElement.scrollWidth, "
                               "document.scrollingElement.clientWidth]")
        assert widths[0] <= widths[1], f"scrolls sideways: {widths[0]} px in {widths[1]} px"
        browser.close()
