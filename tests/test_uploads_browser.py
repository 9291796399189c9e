"""Documents from the patient in a real browser (Debian's Chromium via Playwright):
form -> thank-you page -> upload-link mail over real SMTP -> three files encrypted in
the page with OpenPGP.js and sent in chunks, the connection dropped twice on the way
(once before a chunk reached the server, once after) -> finished -> the link is
refused -> the clinician downloads each and gpg and rnp (and OpenPGP.js, for the small
ones) decrypt it to the same bytes.

The large file is 24 MB here, to keep the test's time reasonable; the 300 MB and 1 GB
cases are measured in bench/bench_uploads.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, sync_playwright
from werkzeug.serving import make_server

from formrelay import create_app, services
from formrelay.mail import outbox

from .area import Browser, Clock, add_user, totp_at
from .conftest import ENV, make_config_dict, write_config
from .helpers.copies import smtp_cfg
from .helpers.servers import ARGS, CHROMIUM, _free_port
from .keys import TestKey, gpg_decrypt, rnp_decrypt
from .smtpd import TlsFiles, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

FIELDS = [{"name": "name", "type": "text", "label": "Naam", "required": True},
          {"name": "scan", "type": "file", "label": "Scan", "accept": ["pdf", "png", "txt"]}]


@pytest.fixture
def served(tmp_path: Path, keys: dict[str, TestKey], tls: TlsFiles) -> Iterator[Any]:
    port = _free_port()
    base = f"http://localhost:{port}"
    with smtp_server(tls) as (smtp, smtp_port):
        cfg = make_config_dict(tmp_path / "data", keys, fields=FIELDS, upload_link=True,
                               server={"base_url": base}, smtp=smtp_cfg(tls, smtp_port))
        clock = Clock()
        app = create_app(write_config(tmp_path / "config.toml", cfg), environ=ENV)
        server = make_server("localhost", port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield app, base, smtp, clock
        finally:
            server.shutdown()
            server.server_close()


def test_form_link_mail_three_files_interrupted_decrypt_with_gpg_and_rnp(
        served: Any, tmp_path: Path, keys: dict[str, TestKey]) -> None:
    app, base, smtp, clock = served
    files = {"verwijsbrief.pdf": b"%PDF-1.7\n" + secrets.token_bytes(24 * 1024 * 1024),
             "huid.png": b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(300_000),
             "notitie.txt": "Toelichting bij de foto's: ëïö\n".encode() * 50}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    s = app.extensions["formrelay"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 360, "height": 740})
        context.set_default_timeout(60_000)
        page: Page = context.new_page()
        page.goto(f"{base}/f/intake")
        page.get_by_label("Naam").fill("Jan")
        page.click("button[type=submit]")
        page.fill("#upload-email", "zoe@example.nl")
        page.click("text=Stuur mij een link om documenten te uploaden")
        page.wait_for_selector("text=Kijk in uw e-mail")
        outbox.deliver_pending(s.settings, s.store, kinds=services.mail_kinds())
        mail = next(m for m in smtp.messages if m.rcpt_tos == ["zoe@example.nl"])
        body = mail.parsed().get_body(("plain",)).get_content()
        link = re.search(r"(http://localhost:\d+/u/\S+)", body)
        assert link, body

        patches = {"n": 0}

        def flaky(route: Route) -> None:
            if route.request.method != "PATCH":
                route.continue_()
                return
            patches["n"] += 1
            if patches["n"] == 4:  # lost before it reached the server
                route.abort("connectionreset")
            elif patches["n"] == 9:  # stored, but the answer was lost
                route.fetch()
                route.abort("connectionreset")
            else:
                route.continue_()

        page.route("**/files/*", flaky)
        page.goto(link.group(1))
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.set_input_files("#upload-files", [str(tmp_path / n) for n in files])
        page.click("#upload-send")
        page.wait_for_function("() => document.querySelectorAll('#upload-list li.sent').length"
                               " == 3 || document.querySelectorAll('#upload-list li.failed')"
                               ".length > 0")
        states = page.eval_on_selector_all("#upload-list li", "els => els.map(e => e.className)")
        assert states == ["sent"] * 3, page.inner_text("#upload-list")
        bars = page.eval_on_selector_all("#upload-list progress",
                                         "els => els.map(e => e.value == e.max)")
        assert bars == [True] * 3
        page.screenshot(path=str(tmp_path / "upload-360.png"), full_page=True)
        page.click("#upload-finish")
        page.wait_for_selector("#done-count")
        assert "3" in page.inner_text("#done-count")
        again = page.goto(link.group(1))
        assert again is not None and again.status == 410
        opener = context.new_page()  # OpenPGP.js reads them too (checked below)
        opener.goto(f"{base}/r/")
        opener.add_script_tag(url=f"{base}/static/vendor/openpgp-6.3.2.min.js")
        downloads = _download_all(app, tmp_path, clock)
        secret_key = keys["alice"].secret.read_text()  # type: ignore[union-attr]
        by_openpgpjs = {opener.evaluate(DECRYPT, [secret_key, base64.b64encode(ct).decode()])
                        for ct in downloads if len(ct) < 2_000_000}
        browser.close()
    assert patches["n"] >= 26  # every chunk, and the two sent again

    wanted = {hashlib.sha256(d).hexdigest() for d in files.values()}
    by_gpg = {hashlib.sha256(gpg_decrypt(keys["alice"], ct)).hexdigest() for ct in downloads}
    by_rnp = {hashlib.sha256(rnp_decrypt(keys["alice"], ct)).hexdigest() for ct in downloads}
    assert not any(d[:64] in ct for ct in downloads for d in files.values())
    assert by_gpg == wanted == by_rnp
    small = {hashlib.sha256(d).hexdigest() for d in files.values() if len(d) < 2_000_000}
    assert by_openpgpjs == small


DECRYPT = """async ([armored, data]) => {
  const key = await openpgp.readPrivateKey({armoredKey: armored});
  const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
  const message = await openpgp.readMessage({binaryMessage: bytes});
  const out = await openpgp.decrypt({message, decryptionKeys: key, format: "binary"});
  const digest = await crypto.subtle.digest("SHA-256", out.data);
  return Array.from(new Uint8Array(digest)).map(b => b.toString(16).padStart(2, "0")).join("");
}"""


def _download_all(app: Any, tmp_path: Path, clock: Clock) -> list[bytes]:
    """The clinician's view: log in, list the documents, download each."""
    add_user(tmp_path, "anna", "--recipient", "alice")
    clinician = Browser(app)
    clinician.enrol("anna", totp_at(clock))
    listing = clinician.get("/clinician/uploads/").get_data(as_text=True)
    ids = re.findall(r'id="upload-([A-Za-z0-9_-]+)"', listing)
    assert len(ids) == 3, listing
    return [clinician.get(f"/clinician/uploads/{fid}").data for fid in ids]
