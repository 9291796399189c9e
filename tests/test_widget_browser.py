"""The widget in a real browser: Debian's Chromium driven by Playwright.

formrelay runs in a real HTTP server (a thread) at http://localhost:<port>; the example
practice page is served from another site, http://127.0.0.1:<port>, which is in the
form's allowed_origins, and from a third, http://127.0.0.1:<other port>, which is not.
Third-party cookies are blocked (checked below), as Safari always does. One browser for
the module; each test gets a fresh context. The app's clock is the real time plus an
offset the tests move forward, so rate-limit windows pass without sleeping.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from flask import Flask
from playwright.sync_api import Browser, Frame, FrameLocator, Page, sync_playwright
from werkzeug.serving import BaseWSGIServer, make_server

from formrelay import create_app
from formrelay.ops.hostpage import example_page, serve_pages

from .conftest import ENV, make_config_dict, write_config
from .helpers.servers import ARGS, CHROMIUM, _free_port
from .keys import TestKey, gpg_decrypt

pytestmark = pytest.mark.sqlite_only  # Chromium; the store is checked elsewhere

SANDBOX = {"allow-forms", "allow-scripts", "allow-same-origin", "allow-popups",
           "allow-popups-to-escape-sandbox", "allow-downloads"}
FORM_LIMIT = 5  # posts per form per minute: low enough to reach the 429 page quickly


class OffsetClock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Site:
    def __init__(self, app: Flask, clock: OffsetClock, base: str, host: str, foreign: str):
        self.app, self.clock = app, clock
        self.base, self.host, self.foreign = base, host, foreign

    @property
    def store(self) -> Any:
        return self.app.extensions["formrelay"].store


TWO_FORMS = """<!doctype html><html lang="nl"><head><meta charset="utf-8"><title>Twee</title>
</head><body><main><h1>Twee formulieren</h1>
<div data-formrelay="intake"></div>
<div data-formrelay="contact" data-lang="en"></div>
<script src="{base}/widget.js" async></script></main></body></html>"""

STATIC_FRAME = """<!doctype html><html lang="nl"><head><meta charset="utf-8">
<title>Zonder JS</title></head><body><main><h1>Formulier zonder JavaScript</h1>
<iframe src="{base}/f/intake?embed=1" title="Formulier" width="600" height="2400"
 sandbox="allow-forms allow-same-origin" referrerpolicy="no-referrer"></iframe>
</main></body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory,
         keys: dict[str, TestKey]) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("browser")
    port, host_port, foreign_port = _free_port(), _free_port(), _free_port()
    base, host = f"http://localhost:{port}", f"http://127.0.0.1:{host_port}"
    cfg = make_config_dict(tmp / "data", keys, allowed_origins=[host], notice="Bij spoed: bel "
                           "112 of de huisartsenpost.", intro="Vul in wat u weet.",
                           server={"base_url": base, "rate_limit_form": f"{FORM_LIMIT}/minute",
                                   "practice_email": "assistente@praktijk.test"})
    cfg["forms"]["contact"] = {
        "title": "Vraag aan de assistente", "recipients": ["alice"], "delivery": "hold",
        "allowed_origins": [host], "fields": [
            {"name": "name", "type": "text", "label": "Naam", "required": True},
            {"name": "question", "type": "textarea", "label": "Uw vraag", "required": True,
             "help": "Geen spoed? Dan hoort u binnen twee werkdagen van ons."}]}
    clock = OffsetClock()
    app = create_app(write_config(tmp / "config.toml", cfg), environ=ENV, clock=clock)
    server: BaseWSGIServer = make_server("localhost", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pages = {"/": example_page(base), "/two.html": TWO_FORMS.format(base=base).encode(),
             "/static.html": STATIC_FRAME.format(base=base).encode()}
    hosts = [serve_pages(host_port, pages), serve_pages(foreign_port, pages)]
    try:
        yield Site(app, clock, base, host, f"http://127.0.0.1:{foreign_port}")
    finally:
        for h in hosts:
            h.shutdown()
            h.server_close()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    site.clock.offset += timedelta(minutes=2)  # every test starts with fresh rate limits
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    context.set_default_timeout(10_000)
    pg = context.new_page()
    yield pg
    context.close()


def widget_frame(page: Page, form_id: str = "intake") -> FrameLocator:
    return page.frame_locator(f'[data-formrelay="{form_id}"] iframe')


def frame_of(page: Page, form_id: str = "intake") -> Frame:
    handle = page.wait_for_selector(f'[data-formrelay="{form_id}"] iframe')
    frame = handle.content_frame() if handle else None
    assert frame is not None
    return frame


def wait_resized(page: Page, form_id: str = "intake") -> int:
    sel = f'[data-formrelay="{form_id}"] iframe'
    page.wait_for_function(f"() => document.querySelector('{sel}').style.height.endsWith('px')")
    return int(page.eval_on_selector(sel, "f => parseInt(f.style.height)"))


def answers(keys: dict[str, TestKey], site: Site, reference: str) -> dict[str, Any]:
    plain = gpg_decrypt(keys["alice"], site.store.submissions.ciphertext(reference))
    msg = message_from_bytes(plain, policy=policy.default)
    for part in msg.walk():
        if part.get_filename() == "answers.json":
            data: dict[str, Any] = json.loads(part.get_payload(decode=True))
            return data
    raise AssertionError("no answers.json")


def tab_to(page: Page, frame: Frame, element_id: str, limit: int = 80) -> None:
    for _ in range(limit):
        if frame.evaluate("() => document.activeElement && document.activeElement.id") == \
                element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached #{element_id}")


# -- the patient's path --------------------------------------------------------------
def test_embedded_form_is_filled_sent_and_decrypts(page: Page, site: Site,
                                                   keys: dict[str, TestKey]) -> None:
    page.goto(site.host + "/")
    iframe = page.wait_for_selector('[data-formrelay="intake"] iframe')
    assert iframe is not None
    assert set((iframe.get_attribute("sandbox") or "").split()) == SANDBOX
    assert iframe.get_attribute("referrerpolicy") == "no-referrer"
    assert iframe.get_attribute("src") == f"{site.base}/f/intake?embed=1"
    height = wait_resized(page)
    assert height > 1000  # the whole form, no scrollbar inside the frame
    page.wait_for_function("() => document.querySelector('iframe').title.includes('Intake')")
    frame = frame_of(page)
    # third-party cookies are blocked in this browser: a cookie cannot even be set
    assert frame.evaluate("() => { document.cookie = 'probe=1; SameSite=None; Secure'; "
                          "return document.cookie; }") == ""
    form = widget_frame(page)
    form.get_by_label("Naam").fill("Jeroen Brünhilde")
    form.get_by_label("Klacht").fill("Pijn in de knie 🦵 sinds maandag")
    form.get_by_label("Verzekeraar").select_option("VGZ")
    form.get_by_label("koorts").check()
    form.get_by_label("Ik ga akkoord met de verwerking.").check()
    form.get_by_role("button", name="Veilig versturen").click()
    ref = form.locator("#reference")
    ref.wait_for()
    reference = ref.inner_text()
    assert re.fullmatch(r"FR-\w{4}-\w{4}", reference)
    assert "Bedankt, uw formulier is ontvangen" in form.locator("h1").inner_text()
    data = answers(keys, site, reference)["answers"]
    assert data["name"] == "Jeroen Brünhilde"
    assert data["complaint"] == "Pijn in de knie 🦵 sinds maandag"
    assert data["insurer"] == "VGZ" and data["symptoms"] == ["koorts"]
    # the frame shrank to the thank-you page; no cookie was ever set for either site
    page.wait_for_function(f"() => parseInt(document.querySelector('iframe').style.height) "
                           f"< {height}")
    assert page.context.cookies() == []


def test_host_page_scripts_cannot_read_the_form(page: Page, site: Site) -> None:
    page.add_init_script("window.__seen = []; window.addEventListener('message', "
                         "e => window.__seen.push(JSON.stringify(e.data)));")
    page.goto(site.host + "/")
    wait_resized(page)
    widget_frame(page).get_by_label("Naam").fill("Geheime Naam")
    widget_frame(page).get_by_label("Klacht").fill("geheime klacht")
    probe = page.evaluate("""() => {
        const f = document.querySelector('iframe');
        let doc, win;
        try { doc = f.contentDocument === null ? 'null' : 'readable'; } catch (e) { doc = e.name; }
        try { f.contentWindow.document.querySelector('input'); win = 'readable'; }
        catch (e) { win = e.name; }
        return {doc, win, fields: document.querySelectorAll('input, textarea, select').length,
                text: document.body.innerText, seen: window.__seen.join(' ')};
    }""")
    assert probe["doc"] == "null" and probe["win"] == "SecurityError"
    assert probe["fields"] == 0
    assert "Geheime" not in probe["text"] and "geheim" not in probe["seen"]
    assert '"height"' in probe["seen"]  # the only thing the frame tells the host page


def test_site_not_in_allowed_origins_cannot_frame_the_form(page: Page, site: Site) -> None:
    with page.expect_console_message(lambda m: "frame-ancestors" in m.text):
        page.goto(site.foreign + "/")
    iframe = page.wait_for_selector("iframe")
    assert iframe is not None
    frame = iframe.content_frame()
    assert frame is not None
    assert not frame.url.startswith(site.base)
    assert frame.locator("form").count() == 0


@pytest.mark.parametrize("width", [1024, 360])
def test_a_blocked_widget_shows_the_phone_and_a_link(browser: Browser, site: Site,
                                                     width: int) -> None:
    """Instead of the browser's grey error: the practice's phone, a link that opens the
    form in a new tab, and one console line for the web builder naming the setting."""
    context = browser.new_context(viewport={"width": width, "height": 800})
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        lines: list[str] = []
        page.on("console", lambda m: lines.append(m.text))
        with page.expect_console_message(lambda m: "allowed_origins" in m.text):
            page.goto(site.foreign + "/")
        fallback = page.wait_for_selector(".formrelay-fallback")
        assert fallback is not None and page.locator("[data-formrelay] iframe").count() == 0
        text = fallback.inner_text()
        assert "Dit formulier kan op deze pagina niet worden getoond" in text
        assert "Of bel Praktijk Test: 020 555 0101" in text
        assert "allowed_origins" not in text  # the setting is for the console only
        open_link = page.locator(".formrelay-fallback a[target=_blank]")
        assert open_link.inner_text() == "Open het formulier in een nieuw tabblad"
        assert open_link.get_attribute("href") == f"{site.base}/f/intake?lang=nl"
        assert open_link.get_attribute("rel") == "noopener"
        assert page.locator(".formrelay-fallback a[href='tel:0205550101']").count() == 1
        named = [ln for ln in lines if "allowed_origins" in ln]
        assert named == [f"formrelay: form 'intake' cannot be framed by {site.foreign}: add "
                         f"'{site.foreign}' to the form's allowed_origins in the formrelay "
                         "configuration"]
        # readable on a phone: nothing wider than the screen, the links on it
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert page.evaluate(overflow) <= 0
        for link in page.locator(".formrelay-fallback a").all():
            box = link.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        # the link opens the form itself, in a tab of its own
        with context.expect_page() as opened:
            open_link.click()
        tab = opened.value
        tab.wait_for_load_state()
        assert tab.locator("form button[type=submit]").count() == 1
    finally:
        context.close()


def test_the_widget_check_tells_allowed_pages_from_others(site: Site) -> None:
    client = site.app.test_client()
    ok = client.get("/f/intake/embed.json", headers={"Origin": site.host})
    assert ok.get_json() == {"allowed": True}
    assert ok.headers["Access-Control-Allow-Origin"] == "*"
    other = client.get("/f/intake/embed.json?lang=en", headers={"Origin": site.foreign})
    answer = other.get_json()
    assert answer["allowed"] is False and answer["phone"] == "020 555 0101"
    assert answer["text"] == "This form cannot be shown on this page."
    assert client.get("/f/nope/embed.json").status_code == 404


def test_two_forms_on_one_page_and_data_lang(page: Page, site: Site) -> None:
    page.goto(site.host + "/two.html")
    h1, h2 = wait_resized(page, "intake"), wait_resized(page, "contact")
    assert h1 > h2 > 150
    assert widget_frame(page, "contact").get_by_role("button", name="Send securely").is_visible()
    assert widget_frame(page, "intake").get_by_role("button",
                                                    name="Veilig versturen").is_visible()
    contact = widget_frame(page, "contact")
    contact.get_by_label("Naam").fill("Ann")
    contact.get_by_label("Uw vraag").fill("Is the practice open on Friday?")
    contact.get_by_role("button", name="Send securely").click()
    contact.locator("#reference").wait_for()
    # the other form is untouched and still the same size
    assert wait_resized(page, "intake") == h1


def test_keyboard_only_with_error_summary(page: Page, site: Site) -> None:
    page.goto(site.host + "/")
    wait_resized(page)
    frame = frame_of(page)
    frame.focus("#f-name")
    tab_to(page, frame, "send")
    page.keyboard.press("Enter")
    frame.wait_for_selector("#error-summary")
    frame.wait_for_function("() => document.activeElement.id === 'error-summary'")
    page.keyboard.press("Tab")
    assert frame.evaluate("() => document.activeElement.getAttribute('href')") == "#f-name"
    page.keyboard.press("Enter")
    frame.wait_for_function("() => document.activeElement.id === 'f-name'")
    described = frame.get_attribute("#f-name", "aria-describedby") or ""
    assert "e-name" in described
    assert frame.get_attribute("#f-name", "aria-invalid") == "true"
    page.keyboard.type("Toetsenbord Gebruiker")
    tab_to(page, frame, "f-complaint")
    page.keyboard.type("alleen met het toetsenbord")
    tab_to(page, frame, "f-consent")
    page.keyboard.press("Space")
    tab_to(page, frame, "send")
    page.keyboard.press("Enter")
    frame.wait_for_selector("#reference")
    # the thank-you page takes focus, so a screen reader announces it
    frame.wait_for_function("() => document.activeElement.id === 'page-title'")


def test_works_without_javascript(browser: Browser, site: Site) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(site.host + "/static.html")
        form = page.frame_locator("iframe")
        form.get_by_label("Naam").fill("Zonder Script")
        form.get_by_label("Klacht").fill("geen javascript")
        form.get_by_label("Ik ga akkoord met de verwerking.").check()
        form.get_by_role("button", name="Veilig versturen").click()
        assert re.fullmatch(r"FR-\w{4}-\w{4}", form.locator("#reference").inner_text())
    finally:
        context.close()


def test_reflows_on_phones_and_at_200_percent_zoom(browser: Browser, site: Site) -> None:
    # 640 CSS px is a 1280 px screen at 200% zoom; 360 a phone; 320 the WCAG reflow width
    context = browser.new_context(viewport={"width": 640, "height": 800})
    overflow = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    try:
        page = context.new_page()
        for width in (640, 360, 320):
            page.set_viewport_size({"width": width, "height": 800})
            page.goto(site.host + "/")
            wait_resized(page)
            assert frame_of(page).evaluate(overflow) <= 0, width
            page.goto(f"{site.base}/f/intake?lang=en")
            assert page.evaluate(overflow) <= 0, width
            box = page.locator("button[type=submit]").bounding_box()
            assert box is not None and box["x"] + box["width"] <= width
    finally:
        context.close()


# -- accessibility -------------------------------------------------------------------
def _axe(page: Page, what: str) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, f"{what}:\n{results.generate_report()}"


def _exhaust_form_limit(site: Site, form_id: str) -> None:
    """Send the form's whole per-minute allowance from a script (not the browser)."""
    for _ in range(FORM_LIMIT):
        with urllib.request.urlopen(f"{site.base}/f/{form_id}") as resp:  # noqa: S310
            html = resp.read().decode()
        hidden = dict(re.findall(r'type="hidden" name="(_[a-z]+)" value="([^"]*)"', html))
        body = urllib.parse.urlencode({**hidden, "name": "Flood", "question": "x"}).encode()
        req = urllib.request.Request(f"{site.base}/f/{form_id}", data=body,  # noqa: S310
                                     headers={"Origin": site.base})
        try:
            urllib.request.urlopen(req).close()  # noqa: S310
        except urllib.error.HTTPError as exc:
            exc.close()


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_no_accessibility_violations(page: Page, site: Site, lang: str) -> None:
    url = f"{site.base}/f/intake?lang={lang}"
    send = "Veilig versturen" if lang == "nl" else "Send securely"
    page.goto(url)
    _axe(page, f"empty form ({lang})")
    page.get_by_role("button", name=send).click()
    page.wait_for_selector("#error-summary")
    _axe(page, f"form with errors ({lang})")
    page.locator("#f-name").fill("Axe")
    page.locator("#f-complaint").fill("toegankelijk")
    page.locator("#f-consent").check()
    page.get_by_role("button", name=send).click()
    page.wait_for_selector("#reference")
    _axe(page, f"thank-you page ({lang})")


def test_flood_shows_429_page_then_recovers(page: Page, site: Site) -> None:
    page.goto(f"{site.host}/two.html")
    wait_resized(page, "contact")
    before = len(site.store.submissions.rows())
    _exhaust_form_limit(site, "contact")
    contact = widget_frame(page, "contact")
    contact.get_by_label("Naam").fill("Te Veel")
    contact.get_by_label("Uw vraag").fill("nog een keer")
    contact.get_by_role("button", name="Send securely").click()
    contact.get_by_text("Too many attempts").wait_for()
    assert len(site.store.submissions.rows()) == before + FORM_LIMIT
    frame = frame_of(page, "contact")
    _axe_frame(frame, "429 page (en)")
    page.goto(f"{site.base}/f/contact?lang=nl")
    page.locator("#f-name").fill("Te Veel")
    page.locator("#f-question").fill("nog een keer")
    page.get_by_role("button", name="Veilig versturen").click()
    page.get_by_text("Te veel pogingen").wait_for()
    _axe(page, "429 page (nl)")
    assert len(site.store.submissions.rows()) == before + FORM_LIMIT
    # a minute later the same patient gets through
    site.clock.offset += timedelta(minutes=2)
    page.go_back()
    page.locator("#f-name").fill("Weer Welkom")
    page.locator("#f-question").fill("nu wel")
    page.get_by_role("button", name="Veilig versturen").click()
    page.locator("#reference").wait_for()
    assert len(site.store.submissions.rows()) == before + FORM_LIMIT + 1


def _axe_frame(frame: Frame, what: str) -> None:
    results = Axe().run(frame)  # a Frame evaluates scripts like a Page
    assert results.violations_count == 0, f"{what}:\n{results.generate_report()}"


def test_screenshot_path_is_documented() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "docs/form.png" in readme
    assert (Path(__file__).parent.parent / "docs" / "form.png").is_file()
