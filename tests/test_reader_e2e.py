"""The browser reader end to end in real Chromium, the whole practice (issue 18's first
proof): the owner is invited and makes a key in the page; on the members page the
owner invites a second reader and an assistant, and adds the second reader's key to
the form. A patient then posts through the widget embedded on the practice's website
(another site), with an upload; both readers open the submission in the page and see
the answers and the upload; the assistant sees the row but no content, and the
ciphertext is refused to it. Once at desktop width and once at 360 px. One server, one
host page and one browser for the module; the accounts are made once."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright
from werkzeug.serving import make_server

from formrelay import create_app
from formrelay.ops.hostpage import example_page, serve_pages

from .area import audit, cli_run
from .canary import leaks
from .conftest import ENV, canary, make_config_dict, write_config
from .keys import TestKey
from .reader import ARGS, CHROMIUM, PASSPHRASE, accept_invitation, make_key, open_in_page
from .smtpd import free_port

# Chromium; the reader's store is checked on PostgreSQL by test_reader_browser and
# test_form_readers
pytestmark = pytest.mark.sqlite_only

SECOND = "de leeszin van de tweede lezer"  # noqa: S105 - a test value


@dataclass
class Practice:
    app: Flask
    data: Path
    base: str
    host: str
    browser: Browser
    owner: Page
    second: Page
    assistant: Page


def _config(tmp: Path, keys: dict[str, TestKey], base: str, host: str) -> Path:
    """`intake` goes to the owner's browser recipient `reader`; `second` is the second
    reader's, on no form until the owner adds it; the form may be embedded by `host`."""
    cfg = make_config_dict(tmp / "data", keys, allowed_origins=[host],
                           server={"base_url": base},
                           smtp={"from_address": "forms@praktijk.test"})  # links printed
    cfg["recipients"] = {rid: {"email": f"{rid}@praktijk.test", "key_source": "browser"}
                         for rid in ("reader", "second")}
    cfg["forms"]["intake"]["recipients"] = ["reader"]
    return write_config(tmp / "config.toml", cfg)


def _context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    context.set_default_timeout(30_000)
    return context


def _invite(owner: Page, name: str, role: str, link: str) -> str:
    """The owner invites on the members page; no mail relay here, so the page shows
    the link to hand over."""
    owner.goto(owner.url.split("/clinician/")[0] + "/clinician/members/")
    owner.locator("#m-username").fill(name)
    owner.locator("#m-email").fill(f"{name}@praktijk.test")
    owner.locator("#m-role").select_option(role)
    owner.locator("#m-recipient" if role == "reader" else "#m-form").select_option(link)
    owner.get_by_role("button", name="Uitnodigen").click()
    return owner.locator("#invited code").inner_text()


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory,
             keys: dict[str, TestKey]) -> Iterator[Practice]:
    mp = pytest.MonkeyPatch()
    from .area import cheap_hashing

    cheap_hashing(mp)
    tmp = tmp_path_factory.mktemp("e2e")
    port, host_port = free_port(), free_port()
    base, host = f"http://localhost:{port}", f"http://127.0.0.1:{host_port}"
    app = create_app(_config(tmp, keys, base, host), environ=ENV)
    app.testing = True
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    website = serve_pages(host_port, {"/": example_page(base)})
    out = cli_run(tmp, "users", "invite", "anna", "--email", "anna@praktijk.test",
                  "--recipient", "reader", "--role", "owner").output
    owner_link = re.search(r"http://\S+/clinician/invite/\S+", out).group(0)  # type: ignore[union-attr]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            owner = _context(browser).new_page()
            accept_invitation(owner, owner_link)
            make_key(owner)
            second_link = _invite(owner, "bram", "reader", "second")
            assistant_link = _invite(owner, "sanne", "assistant", "intake")
            second = _context(browser).new_page()
            accept_invitation(second, second_link)
            make_key(second, passphrase=SECOND)
            assistant = _context(browser).new_page()
            accept_invitation(assistant, assistant_link, then="**/clinician/")
            # the owner adds the second reader's key to the form, in the browser
            owner.goto(f"{base}/clinician/members/")
            readers = owner.locator("#readers-intake")
            readers.get_by_label("Lezer toevoegen").select_option("second")
            readers.get_by_role("button", name="Toevoegen").click()
            owner.locator("#readers-changed").wait_for()
            assert owner.locator("#reader-intake-second").is_visible()
            yield Practice(app, tmp / "data", base, host, browser, owner, second, assistant)
            browser.close()
    finally:
        website.shutdown()
        website.server_close()
        server.shutdown()
        server.server_close()
        mp.undo()


def _post_through_the_widget(p: Practice, width: int, mark: str) -> str:
    """A patient on the practice's website (another site) fills in the embedded form
    with an upload; returns the reference the form shows."""
    context = p.browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(p.host + "/")
    form = page.frame_locator('[data-formrelay="intake"] iframe')
    form.get_by_label("Naam").fill(f"Jeroen Brünhilde {width}")
    form.get_by_label("Klacht").fill(f"Knie {mark}")
    form.get_by_label("Bijlage").set_input_files({"name": "uitslag lab.txt",
                                                   "mimeType": "text/plain",
                                                   "buffer": f"uitslag {mark}".encode()})
    form.get_by_label("Ik ga akkoord met de verwerking.").check()
    form.get_by_role("button", name="Veilig versturen").click()
    reference = form.locator("#reference")
    reference.wait_for(timeout=30_000)
    ref = reference.inner_text()
    context.close()
    return ref


def _reads(page: Page, base: str, ref: str, passphrase: str, mark: str, width: int) -> None:
    """Open `ref` in the reader: the answers and the upload are shown, and no request
    the page or its worker sends afterwards carries any of it (the canary)."""
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{base}/clinician/")
    page.locator("#reader[data-ready]").wait_for(state="attached")
    sent: list[str] = []
    page.on("request", lambda q: sent.append(f"{q.method} {q.url} {q.post_data or ''}"))
    open_in_page(page, ref, passphrase)
    shown = page.locator("#opened")
    shown.wait_for(state="visible")
    # the worker's fetch of the ciphertext is seen here too: the net covers the worker
    assert any(f"GET {base}/clinician/read/{ref}" in line for line in sent), sent
    text = shown.inner_text()
    assert f"Jeroen Brünhilde {width}" in text and f"Knie {mark}" in text
    with page.expect_download() as dl:
        page.get_by_role("link", name=re.compile("uitslag lab.txt")).click()
    assert Path(dl.value.path()).read_bytes() == f"uitslag {mark}".encode()
    assert page.evaluate("() => document.scrollingElement.scrollWidth <= "
                         "document.scrollingElement.clientWidth")  # no sideways scroll
    page.get_by_role("button", name="Terug naar de lijst").click()
    assert not any(mark in line for line in sent), sent


@pytest.mark.parametrize("width", [1024, 360])
def test_patient_posts_through_the_widget_two_readers_open_it_the_assistant_cannot(
        practice: Practice, width: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p, mark = practice, canary()
    ref = _post_through_the_widget(p, width, mark)
    _reads(p.owner, p.base, ref, PASSPHRASE, mark, width)
    _reads(p.second, p.base, ref, SECOND, mark, width)

    a = p.assistant
    a.set_viewport_size({"width": width, "height": 900})
    a.goto(f"{p.base}/clinician/")
    row = a.locator(f"#row-{ref}")
    assert row.is_visible() and "Intake fysiotherapie" in row.inner_text()
    assert row.get_by_role("button", name="Openen").count() == 0
    assert mark not in a.content()
    fetched = a.evaluate("(url) => fetch(url, {credentials: 'same-origin'})"
                         ".then(async r => [r.status, await r.text()])",
                         f"{p.base}/clinician/read/{ref}")
    assert fetched[0] == 403 and "BEGIN PGP" not in fetched[1]

    reads = [(r["actor"], r["outcome"]) for r in audit(p.app, "read") if r["reference"] == ref]
    assert reads == [("user:anna", "ok"), ("user:bram", "ok"), ("user:sanne", "refused")]
    # the owner's members page fits the width too
    p.owner.goto(f"{p.base}/clinician/members/")
    assert p.owner.locator("#reader-intake-second").is_visible()
    assert p.owner.evaluate("() => document.scrollingElement.scrollWidth <= "
                            "document.scrollingElement.clientWidth")
    # the canary: in no file of the data folder (database, WAL, keyring), nor the logs
    assert leaks(mark, roots=[p.data], texts=[r.getMessage() for r in caplog.records]) == []


def _tampered(route: Route) -> None:
    """The script as served, with one line of someone else's code in front."""
    body = route.fetch().body()
    route.fulfill(body=b"console.log('tampered');\n" + body, content_type="text/javascript")


def test_a_reader_script_that_is_not_the_pinned_one_never_runs(practice: Practice) -> None:
    """The worker's script carries no integrity attribute: the page checks its hash
    before starting it, and the worker checks OpenPGP.js's; changed bytes never run."""
    p = practice
    ref = _post_through_the_widget(p, 1024, canary())
    ran: list[str] = []  # what the pages and workers wrote to the console
    for script in ("reader/decrypt.js", "vendor/openpgp-"):
        context = _context(p.browser)
        context.add_cookies(p.owner.context.cookies())
        page = context.new_page()
        page.on("console", lambda m: ran.append(m.text))
        context.route(f"**/static/{script}*", _tampered)
        page.goto(f"{p.base}/clinician/")
        page.locator(f"#row-{ref}").get_by_role("button", name="Openen").click()
        page.get_by_label("Leeswachtzin", exact=True).fill(PASSPHRASE)
        page.locator("#unlock").get_by_role("button", name="Openen").click()
        error = page.locator("#read-error")
        error.wait_for(state="visible")
        assert "kon niet worden geopend" in error.inner_text(), script
        assert page.locator("#opened").is_hidden() and "tampered" not in ran, script
        assert page.locator("#reader[data-ready]").count() == 0
        context.close()
