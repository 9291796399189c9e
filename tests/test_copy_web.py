"""The patient copy under real gunicorn and in a real browser (Debian's Chromium).

One `formrelay serve` process serves both tests: the browser fills in the form, sees the
pickup code, opens the mailed link (its secret in the URL fragment, read by copy.js),
is refused with a wrong code and downloads the PDF with the right one; every page is
checked with axe-core. Then gunicorn's own access log is searched for the link secret.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import sync_playwright

from formrelay import services
from formrelay.config import load_config
from formrelay.mail import outbox
from formrelay.store import Store

from .conftest import ENV, canary, encode_multipart, make_config_dict, write_config
from .helpers.copies import pdf_text
from .keys import TestKey
from .smtpd import free_port

pytestmark = pytest.mark.sqlite_only  # Chromium; the store is checked elsewhere

FIELDS: list[dict[str, Any]] = [
    {"name": "name", "type": "text", "label": "Naam", "required": True,
     "autocomplete": "name"},
    {"name": "email", "type": "email", "label": "E-mail", "autocomplete": "email"},
    {"name": "complaint", "type": "textarea", "label": "Klacht", "required": True},
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


@dataclass
class Server:
    base: str
    config: Path
    log: Path
    mail: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def deliver(self) -> list[Any]:
        """Run one outbox pass (as `formrelay worker` would) into the mail folder."""
        settings = load_config(self.config, ENV)
        store = Store(settings.db_path)
        try:
            outbox.deliver_pending(settings, store, kinds=services.mail_kinds())
        finally:
            store.close()
        return [message_from_bytes(p.read_bytes(), policy=policy.default)
                for p in sorted(self.mail.glob("*.eml"))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, TestKey]
           ) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("copyweb")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = make_config_dict(root / "data", keys, fields=FIELDS, patient_copy=True,
                           server={"base_url": base, "copy_downloads": 2})
    path = write_config(root / "config.toml", cfg)
    log = root / "gunicorn.log"
    env = {**os.environ, **ENV}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "formrelay", "--config", str(path), "serve", "--bind",
             f"127.0.0.1:{port}", "--workers", "1", "--connections", "20"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    srv = Server(base, path, log, root / "mail", proc)
    for _ in range(300):  # wait until it answers (bounded)
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):  # noqa: S310
                pass
            break
        except urllib.error.HTTPError as exc:  # it answers (503 would be a key warning)
            exc.close()
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                raise AssertionError(log.read_text()) from None
            time.sleep(0.1)
    yield srv
    srv.stop()


def _http(method: str, url: str, data: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:  # its response must be closed too
            return exc.code, dict(exc.headers), exc.read()


def test_gunicorn_access_log_never_holds_the_link_secret(server: Server) -> None:
    form = _http("GET", f"{server.base}/f/intake")[2].decode()
    hidden = dict(re.findall(r'name="(_[a-z]+)" value="([^"]*)"', form))
    body = {**hidden, "name": f"Test {canary()}", "email": "p@example.nl",
            "complaint": "knie", "_copy": "1"}
    status, _, page = _http("POST", f"{server.base}/f/intake", encode_multipart(body), {
        "Origin": server.base,
        "Content-Type": "multipart/form-data; boundary=frtestboundary"})
    html = page.decode()
    assert status == 200, html
    code = re.search(r'id="pickup-code">([^<]+)<', html).group(1)  # type: ignore[union-attr]
    mails = server.deliver()
    link = next(re.search(r"(http://\S+/copy/\S+)#(\S+)", m.get_body(("plain",)).get_content())
                for m in mails if "p@example.nl" in str(m["To"]))
    assert link
    url, key = link.group(1), link.group(2)
    token = url.rsplit("/", 1)[1]
    # what a browser sends: the path without the fragment; and what a mail client that
    # mangles '#' into '%23' sends: the secret in the path
    assert _http("GET", url)[0] == 200
    assert _http("GET", f"{url}%23{key}")[0] == 200
    assert _http("GET", f"{url}?lang=en&key={key}")[0] == 200
    post = urllib.parse.urlencode({"key": key, "code": code}).encode()
    status, headers, pdf = _http("POST", url, post, {
        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and pdf.startswith(b"%PDF")
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    time.sleep(0.2)  # let gunicorn flush its access lines (not a timed assertion)
    log = server.log.read_text(encoding="utf-8", errors="replace")
    assert "/copy/[redacted]" in log  # the access log is on and saw the requests
    for secret in (key, token, token.split(".")[1], code):
        assert secret not in log


def test_browser_flow_with_axe(server: Server, tmp_path: Path) -> None:
    axe = Axe()
    mark = canary()

    def clean(page: Any, what: str) -> None:
        result = axe.run(page)
        assert result.violations_count == 0, f"{what}:\n{result.generate_report()}"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(accept_downloads=True)
            page = ctx.new_page()
            page.goto(f"{server.base}/f/intake?lang=en")
            clean(page, "form with the copy tick")
            page.fill("#f-name", f"Zoë {mark}")
            page.fill("#f-email", "zoe@example.nl")
            page.fill("#f-complaint", f"Knee pain when climbing stairs {mark}")
            page.check("#f-_copy")
            page.click("button[type=submit]")
            page.wait_for_selector("#pickup-code")
            clean(page, "thank-you page with the pickup code")
            code = page.inner_text("#pickup-code").strip()
            assert len(code) == 6

            mails = server.deliver()
            body = next(m.get_body(("plain",)).get_content() for m in mails
                        if "zoe@example.nl" in str(m["To"]))
            link = re.search(r"http://\S+/copy/\S+#\S+", body)
            assert link and mark not in body
            base = link.group(0).split("#", 1)[0]
            page.goto(f"{base}?lang=en")  # a link cut short before the '#'
            assert page.is_visible("#copy-nokey")
            sent: list[tuple[str, str]] = []
            page.on("request", lambda req: sent.append((req.url, req.headers.get("referer")
                                                        or "")))
            page.goto(link.group(0))
            assert page.input_value("#copy-key") == link.group(0).split("#", 1)[1]
            assert page.is_hidden("#copy-nokey")
            # the page's own requests (styles, scripts) carry no Referer and no secret
            assert len(sent) > 1 and not [r for r in sent if r[1]], sent
            assert not [u for u, _ in sent if link.group(0).split("#", 1)[1] in u]
            assert "Pickup code" in page.content()  # the language the form was sent in
            clean(page, "pickup page (en)")
            with page.expect_navigation(wait_until="load"):
                page.click("a[data-keep-hash]")  # to Dutch; the key comes along
            assert page.input_value("#copy-key") == link.group(0).split("#", 1)[1]
            assert "Ophaalcode" in page.content()
            clean(page, "pickup page (nl)")
            page.fill("#f-code", "AAAAAA" if code != "AAAAAA" else "BBBBBB")
            page.click("button[type=submit]")
            page.wait_for_selector("#e-code")
            assert "U kunt het nog 4 keer proberen" in page.inner_text("#e-code")
            clean(page, "pickup page with a wrong code")
            page.fill("#f-code", code.lower())
            with page.expect_download() as dl:
                page.click("button[type=submit]")
            saved = tmp_path / "copy.pdf"
            dl.value.save_as(saved)
            text = pdf_text(saved.read_bytes())
            assert f"Zoë {mark}" in text and f"climbing stairs {mark}" in text
            # the second (last) download, then the friendly "downloaded already" page
            page.goto(link.group(0))
            page.fill("#f-code", code)
            with page.expect_download():
                page.click("button[type=submit]")
            page.goto(f"{base}?lang=en")  # a new document (not just a new fragment)
            assert "downloaded already" in page.content()
            assert "020 555 0101" in page.content()
            clean(page, "used-up page")
        finally:
            browser.close()
