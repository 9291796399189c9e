"""What the browser tests of the clinician area share: the app served on a free port in
a thread of the test, and a clinician's first login (password, TOTP, recovery codes)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyotp
import pytest
from flask import Flask
from playwright.sync_api import Page
from werkzeug.serving import make_server

from ..area import PASSWORD, cheap_hashing
from ..smtpd import free_port


def _live(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch,
          **form: object) -> Iterator[tuple[Flask, str]]:
    cheap_hashing(monkeypatch)
    port = free_port()
    base = f"http://localhost:{port}"
    app = make_app(server={"base_url": base}, **form)
    with serving_in_thread(app, port):
        yield app, base


@contextmanager
def serving_in_thread(app: Flask, port: int) -> Iterator[None]:
    """The app on 127.0.0.1:`port` in a thread of the test (werkzeug, threaded), stopped
    at the end."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join(10)


def _first_login(page: Page, base: str) -> None:
    page.goto(f"{base}/clinician/login")
    page.get_by_label("Gebruikersnaam").fill("anna")
    page.get_by_label("Wachtwoord").fill(PASSWORD)
    page.get_by_role("button", name="Volgende").click()
    page.wait_for_url("**/clinician/enrol")
    secret = page.locator("#secret").inner_text().replace(" ", "")
    page.get_by_label("Code", exact=True).fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Bevestigen").click()
    page.get_by_role("link", name="Ik heb ze bewaard, verder").click()
