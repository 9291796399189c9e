"""Documents from the patient in a real browser (Debian's Chromium via Playwright):
form -> thank-you page -> upload-link mail over real SMTP -> three files encrypted in
the page with OpenPGP.js and sent in chunks, the connection dropped twice on the way
(once before a chunk reached the server, once after) -> finished -> the link is
refused -> the clinician downloads each and gpg and rnp (and OpenPGP.js, for the small
ones) decrypt it to the same bytes.

The large file is 300 MB (the issue's proof), made in the test, interrupted halfway
(connection resets at its middle chunks) and resumed from the last chunk stored; the
downloads are decrypted by streaming to gpg and rnp and hashed as they come. A reload
of the page mid-file is the second test: whole files are not sent again, the cut one
is sent again from its start. Throughput and memory are measured in
bench/bench_uploads.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, sync_playwright
from werkzeug.serving import make_server

from formrelay import create_app, services
from formrelay.mail import outbox

from .area import Browser, Clock, add_user, audit, totp_at
from .conftest import ENV, make_config_dict, write_config
from .helpers.copies import smtp_cfg
from .helpers.servers import ARGS, CHROMIUM, _free_port
from .keys import TestKey
from .smtpd import TlsFiles, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

BIG = 300 * 1024 * 1024  # the 300 MB file
HALF = BIG // (1024 * 1024) // 2  # the PATCH of its middle chunk
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


# the 300 MB proof: minutes on a busy machine; runs by default, on SQLite (the
# chunks' store on PostgreSQL is proved by test_uploads with two instances)
@pytest.mark.slow
@pytest.mark.sqlite_only
def test_form_link_mail_three_files_interrupted_decrypt_with_gpg_and_rnp(
        served: Any, tmp_path: Path, keys: dict[str, TestKey]) -> None:
    app, base, smtp, clock = served
    files = {"verwijsbrief.pdf": b"%PDF-1.7\n" + os.urandom(BIG),
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
            if patches["n"] == HALF:  # lost before it reached the server
                route.abort("connectionreset")
            elif patches["n"] == HALF + 2:  # stored, but the answer was lost
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
                               ".length > 0", timeout=900_000)  # 300 MB on a busy machine
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
        by_openpgpjs = {opener.evaluate(DECRYPT, [secret_key, base64.b64encode(
            ct.read_bytes()).decode()]) for ct in downloads if ct.stat().st_size < 2_000_000}
        browser.close()
    assert patches["n"] >= BIG // (1024 * 1024) + 2  # every chunk, and the two sent again

    wanted = {hashlib.sha256(d).hexdigest() for d in files.values()}
    heads = [d[9:73] for d in files.values()]
    del files  # the 300 MB: hashes from here on
    by_gpg = {streamed_sha256(["gpg", "--homedir", str(keys["alice"].home), "--batch",
                               "--decrypt", str(ct)]) for ct in downloads}
    by_rnp = {streamed_sha256(["rnp", "--keyfile", str(keys["alice"].secret), "--password",
                               "", "--decrypt", "--output", "-", str(ct)])
              for ct in downloads}
    assert not any(head in ct.read_bytes()[:4_000_000] for ct in downloads for head in heads)
    assert by_gpg == wanted == by_rnp
    assert len(by_openpgpjs) == 2 and by_openpgpjs < wanted


def test_reload_mid_file_keeps_whole_files_and_sends_the_cut_one_again(
        served: Any, tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """An interrupted upload after a page reload: the patient picks the same files
    again; the file sent whole is not sent twice, the cut one is dropped on the server
    and sent again from its start (its encryption cannot go on after a reload)."""
    app, base, smtp, clock = served
    files = {"notitie.txt": b"Eerst dit bestand.\n" * 100,
             "scan.pdf": b"%PDF-1.7\n" + os.urandom(6 * 1024 * 1024)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / n) for n in files]
    s = app.extensions["formrelay"]
    ids: list[str] = []
    sent: dict[str, int] = {}
    cut = threading.Event()

    def count(route: Route) -> None:
        if route.request.method != "PATCH":
            route.continue_()
            return
        fid = route.request.url.split("/files/")[1].split("?")[0]
        if fid not in ids:
            ids.append(fid)
        sent[fid] = sent.get(fid, 0) + 1
        if len(ids) == 2 and sent[fid] > 3 and not cut.is_set() or \
                cut.is_set() and len(ids) == 2:
            cut.set()  # the network goes: the page retries, until the patient reloads
            route.abort("connectionreset")
            return
        route.continue_()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 360, "height": 740})
        context.set_default_timeout(60_000)
        page = context.new_page()
        link = _upload_link(page, base, smtp, s)
        page.route("**/files/*", count)
        page.goto(link)
        page.set_input_files("#upload-files", paths)
        page.click("#upload-send")
        while not cut.is_set():
            page.wait_for_timeout(100)
        page.reload()
        page.set_input_files("#upload-files", paths)
        page.click("#upload-send")
        page.wait_for_function("() => document.querySelectorAll('#upload-list li.sent').length"
                               " == 2 || document.querySelectorAll('#upload-list li.failed')"
                               ".length > 0")
        states = page.eval_on_selector_all("#upload-list li", "els => els.map(e => e.className)")
        assert states == ["sent", "sent"], page.inner_text("#upload-list")
        page.click("#upload-finish")
        page.wait_for_selector("#done-count")
        assert "2" in page.inner_text("#done-count")
        browser.close()
    # the text file went once; the scan's first try was dropped, its second went whole
    assert len(ids) == 3 and sent[ids[0]] == 1 and sent[ids[2]] == 7, sent
    dropped = s.store.uploads.file(ids[1])
    assert dropped is not None and dropped["state"] == "deleted"
    assert [e for e in audit(app, "upload deleted") if "page reload" in e["detail"]]
    downloads = _download_all(app, tmp_path, clock, count=2)
    by_gpg = {streamed_sha256(["gpg", "--homedir", str(keys["alice"].home), "--batch",
                               "--decrypt", str(ct)]) for ct in downloads}
    assert by_gpg == {hashlib.sha256(d).hexdigest() for d in files.values()}


def _upload_link(page: Page, base: str, smtp: Any, s: Any) -> str:
    """The form, then "send me a link to upload documents", then the link from the mail."""
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
    return link.group(1)


DECRYPT = """async ([armored, data]) => {
  const key = await openpgp.readPrivateKey({armoredKey: armored});
  const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
  const message = await openpgp.readMessage({binaryMessage: bytes});
  const out = await openpgp.decrypt({message, decryptionKeys: key, format: "binary"});
  const digest = await crypto.subtle.digest("SHA-256", out.data);
  return Array.from(new Uint8Array(digest)).map(b => b.toString(16).padStart(2, "0")).join("");
}"""


def _download_all(app: Any, tmp_path: Path, clock: Clock, count: int = 3) -> list[Path]:
    """The clinician's view: log in, list the documents, download each (streamed to a
    file: one is 300 MB)."""
    add_user(tmp_path, "anna", "--recipient", "alice")
    clinician = Browser(app)
    clock.now = datetime.now(UTC)  # the app keeps real time: its TOTP is of now
    clinician.enrol("anna", totp_at(clock))
    listing = clinician.get("/clinician/uploads/").get_data(as_text=True)
    ids = re.findall(r'id="upload-([A-Za-z0-9_-]+)"', listing)
    assert len(ids) == count, listing
    out = []
    for fid in ids:
        r = clinician.get(f"/clinician/uploads/{fid}", buffered=False)
        assert r.status_code == 200
        path = tmp_path / f"download-{fid}.pgp"
        with path.open("wb") as fh:
            for piece in r.response:
                fh.write(piece)
        r.close()
        out.append(path)
    return out


def streamed_sha256(command: list[str]) -> str:
    """The SHA-256 of what `command` writes, read as it comes (never all in memory)."""
    digest = hashlib.sha256()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        while piece := proc.stdout.read(1 << 20):
            digest.update(piece)
    assert proc.returncode == 0, command
    return digest.hexdigest()
