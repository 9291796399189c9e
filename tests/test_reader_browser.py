"""The browser reader end to end in real Chromium (issue 18): an invitation link, a
password, the authenticator app, a key made in the page with a recovery sheet, and then
a patient's submission encrypted to that key. The server only ever had the public key
and two locked copies of the private key: the typed passphrase opens the stored copy
with gpg, RNP and OpenPGP.js; nothing the server received, stored or logged does."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from flask import Flask
from playwright.sync_api import Page, Request, sync_playwright

from .area import PASSWORD, answers, audit, cheap_hashing
from .canary import leaks
from .conftest import canary, post_form, valid_answers
from .keys import TestKey
from .reader import (
    ARGS,
    CHROMIUM,
    NEW_PASSPHRASE,
    PASSPHRASE,
    accept_invitation,
    damaged,
    gpg_encrypt,
    gpg_with_locked_key,
    hold,
    invite,
    make_key,
    open_in_page,
    openpgp_unlocks,
    rnp_with_locked_key,
    serve,
)

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


@pytest.fixture
def live(tmp_path: Path, keys: dict[str, TestKey],
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, str]]:
    cheap_hashing(monkeypatch)
    yield from serve(tmp_path, keys)


def _values(body: bytes) -> set[str]:
    """The field values of a form post (urlencoded, or multipart from the page's fetch)."""
    text = body.decode("utf-8", "replace")
    if text.startswith("--"):
        boundary = text.split("\r\n", 1)[0]
        return {part.split("\r\n\r\n", 1)[-1].rstrip("\r\n-")
                for part in text.split(boundary) if "\r\n\r\n" in part}
    return {v for _, v in parse_qsl(text, keep_blank_values=True)}


def test_invitation_key_in_the_page_then_a_submission_only_that_passphrase_opens(
        live: tuple[Flask, str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app, base = live
    mark = canary()
    store = app.extensions["formrelay"].store
    link = invite(tmp_path)
    # no key yet: the form is closed, nothing is stored (fail closed)
    closed = post_form(app.test_client(), valid_answers("te vroeg"), json_answer=True,
                       headers={"Origin": base})
    assert closed.status_code == 503 and store.submissions.rows(["intake"]) == []

    bodies: list[bytes] = []
    problems: list[str] = []

    def sent(request: Request) -> None:
        if request.post_data_buffer:
            bodies.append(request.post_data_buffer)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context().new_page()
        page.on("request", sent)
        page.on("console", lambda m: problems.append(f"{m.text} {m.location.get('url')}")
                if m.type == "error" and "favicon.ico" not in m.location.get("url", "")
                else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        accept_invitation(page, link)
        fingerprint, recovery = make_key(page)
        assert "is actief" in page.locator(".flash").inner_text()

        # a patient posts: the form is open now and encrypted to the browser-made key
        r = post_form(app.test_client(), {**valid_answers("voor de leessleutel"),
                                          "complaint": f"Knie {mark}", "visit": "2026-11-30",
                                          "attachment": (b"uitslag " + mark.encode(),
                                                         "uitslag lab.txt", "text/plain")},
                      json_answer=True, headers={"Origin": base})
        assert r.status_code == 200, r.get_data(as_text=True)
        ref = r.get_json()["reference"]

        # the clinician opens it in the page: answers, the upload, nothing sent back
        page.goto(f"{base}/clinician/")
        after: list[str] = []
        page.on("request", lambda q: after.append(f"{q.method} {q.url} {q.post_data or ''}"))
        open_in_page(page, ref)
        shown = page.locator("#opened")
        shown.wait_for(state="visible", timeout=30_000)
        text = shown.inner_text()
        assert "Jeroen Brünhilde voor de leessleutel" in text and mark in text
        assert "30-11-2026" in text  # a date as a Dutch reader writes it
        assert "Klacht" in text and "Intake fysiotherapie" in text
        with page.expect_download() as dl:
            page.get_by_role("link", name="uitslag lab.txt").click()
        assert Path(dl.value.path()).read_bytes() == b"uitslag " + mark.encode()
        page.get_by_role("button", name="Terug naar de lijst").click()
        assert not any(mark in line for line in after), after
        storage = page.evaluate("() => [localStorage.length, sessionStorage.length, "
                                "document.cookie]")
        assert storage == [0, 0, ""]

        # the passphrase forgotten: the recovery sheet sets a new one, all stays readable
        page.goto(f"{base}/clinician/key/")
        page.get_by_label("Herstelsleutel", exact=True).fill("AAAA-BBBB-CCCC-DDDD-EEEE")
        page.get_by_label("Nieuwe leeswachtzin", exact=True).fill(NEW_PASSPHRASE)
        page.get_by_label("Nieuwe leeswachtzin nogmaals").fill(NEW_PASSPHRASE)
        page.get_by_role("button", name="Nieuwe wachtzin instellen").click()
        page.locator("#recover-error").wait_for(state="visible", timeout=30_000)
        assert "opent uw sleutel niet" in page.locator("#recover-error").inner_text()
        page.get_by_label("Herstelsleutel", exact=True).fill(recovery.lower())
        page.get_by_role("button", name="Nieuwe wachtzin instellen").click()
        page.locator("#recover-done").wait_for(state="visible", timeout=30_000)
        page.goto(f"{base}/clinician/")
        open_in_page(page, ref, passphrase=NEW_PASSPHRASE)
        page.locator("#opened").wait_for(state="visible", timeout=30_000)
        assert mark in page.locator("#opened").inner_text()
        browser.close()
    assert problems == []
    assert len(fingerprint) == 40 and len(recovery) == 39
    reads = audit(app, "read")  # every fetch of the ciphertext: before and after recovery
    assert [(a["reference"], a["actor"]) for a in reads] == [(ref, "user:anna")] * 2
    # the canary: not in the data folder (database, WAL, keyring), the logs, or any body
    assert leaks(mark, roots=[tmp_path], texts=[x.getMessage() for x in caplog.records],
                 blobs=bodies) == []
    ciphertext = b"".join(store.submissions.stream(ref))
    [row] = store.readers.keys(store.clinicians.get(username="anna")["id"])
    assert row["fingerprint"] == fingerprint and row["state"] == "active"
    locked, spare = row["locked_key"], row["recovery_locked_key"]
    [recovered] = audit(app, "key recovered")
    assert fingerprint in recovered["detail"]

    # the typed passphrase opens the stored copy, in gpg and in RNP (Thunderbird)
    opened = gpg_with_locked_key(locked, NEW_PASSPHRASE, ciphertext)
    assert opened.returncode == 0, opened.stderr
    assert answers(opened.stdout)["answers"]["complaint"] == f"Knie {mark}"
    assert rnp_with_locked_key(locked, NEW_PASSPHRASE, ciphertext).returncode == 0
    assert gpg_with_locked_key(locked, PASSPHRASE, ciphertext).returncode != 0  # the old one
    # and the recovery key opens the second copy
    assert gpg_with_locked_key(spare, recovery, ciphertext).returncode == 0

    # nothing the server received, stored or logged holds the secrets or unlocks a copy
    candidates = {v for body in bodies for v in _values(body)}
    for table in ("users", "sessions", "invitations", "reader_keys", "audit", "outbox",
                  "recovery_codes", "submissions"):
        for db_row in store.conn.execute(f"SELECT * FROM {table}"):  # noqa: S608 - fixed names
            candidates |= {str(v) for v in dict(db_row).values() if v is not None}
    candidates |= {rec.getMessage() for rec in caplog.records}
    seen = "\n".join(candidates)
    assert PASSPHRASE not in seen and NEW_PASSPHRASE not in seen and recovery not in seen
    assert {PASSWORD, fingerprint, "anna"} <= candidates  # the net caught what it should
    # a passphrase has 12 characters at least (the page refuses shorter ones)
    tried = sorted(c for c in candidates if 12 <= len(c) < 1000) + [PASSPHRASE, NEW_PASSPHRASE]
    with ThreadPoolExecutor(2) as pool:  # ~0.1 s a try: both copies at once
        both = pool.map(openpgp_unlocks, [locked, spare], [tried, [*tried, recovery]])
    assert list(both) == [[NEW_PASSPHRASE], [recovery]]
    for candidate in sorted(v for body in bodies for v in _values(body) if 12 <= len(v) < 1000):
        assert gpg_with_locked_key(locked, candidate, ciphertext).returncode != 0, candidate

    created = audit(app, "key created")
    assert [a["outcome"] for a in created] == ["ok"] and fingerprint in created[0]["detail"]
    [pinned] = audit(app, "key pinned")
    assert pinned["actor"] == "user:anna" and "reader" in pinned["detail"]
    assert json.loads(store.clinicians.get(username="anna")["recipients"]) == ["reader"]


def test_wrong_passphrase_foreign_and_damaged_ciphertexts_on_a_360_px_phone(
        live: tuple[Flask, str], tmp_path: Path, keys: dict[str, TestKey]) -> None:
    app, base = live
    store = app.extensions["formrelay"].store
    link = invite(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 360, "height": 740}).new_page()
        accept_invitation(page, link)
        make_key(page)
        good = post_form(app.test_client(), valid_answers("telefoon"), json_answer=True,
                         headers={"Origin": base}).get_json()["reference"]
        ciphertext = b"".join(store.submissions.stream(good))
        foreign = hold(app, gpg_encrypt(keys["alice"], b"niet voor anna"), tmp_path)
        broken = hold(app, damaged(ciphertext), tmp_path)
        page.goto(f"{base}/clinician/")
        assert _no_sideways_scroll(page)

        # a wrong passphrase: a clear message, nothing sent to the server (once the
        # reader's worker is loaded and checked)
        page.locator("#reader[data-ready]").wait_for(state="attached")
        sent: list[str] = []
        page.on("request", lambda q: sent.append(f"{q.method} {q.url}"))
        open_in_page(page, good, passphrase="dit is niet mijn leeszin")
        error = page.locator("#read-error")
        error.wait_for(state="visible")
        assert "niet uw leeswachtzin" in error.inner_text()
        assert sent == []
        assert audit(app, "read") == []

        page.get_by_label("Leeswachtzin", exact=True).fill(PASSPHRASE)
        page.locator("#unlock").get_by_role("button", name="Openen").click()
        page.locator("#opened").wait_for(state="visible", timeout=30_000)
        assert "Jeroen Brünhilde telefoon" in page.locator("#opened").inner_text()
        assert _no_sideways_scroll(page)
        page.get_by_role("button", name="Terug naar de lijst").click()

        # not for this key: who to ask instead; damaged: a clear error; both audited
        page.locator(f"#row-{foreign}").get_by_role("button", name="Openen").click()
        error.wait_for(state="visible")
        assert "niet voor uw sleutel versleuteld; vraag het aan anna (reader)" \
            in error.inner_text()
        page.get_by_role("button", name="Terug naar de lijst").first.click()
        page.locator(f"#row-{broken}").get_by_role("button", name="Openen").click()
        page.wait_for_function("() => document.querySelector('#read-error').textContent"
                               ".includes('beschadigd')")
        assert page.locator("#opened").is_hidden()

        # a key change: new submissions go to the new key; an older one asks for the
        # earlier key's passphrase, and both stay readable in the same visit
        page.goto(f"{base}/clinician/key/")
        make_key(page, passphrase=NEW_PASSPHRASE)
        newer = post_form(app.test_client(), valid_answers("nieuwe sleutel"), json_answer=True,
                          headers={"Origin": base}).get_json()["reference"]
        page.goto(f"{base}/clinician/")
        open_in_page(page, newer, passphrase=NEW_PASSPHRASE)
        page.locator("#opened").wait_for(state="visible", timeout=30_000)
        assert "nieuwe sleutel" in page.locator("#opened").inner_text()
        page.get_by_role("button", name="Terug naar de lijst").click()
        # the key is unlocked: no passphrase asked, until the page finds the earlier key
        page.locator(f"#row-{good}").get_by_role("button", name="Openen").click()
        error.wait_for(state="visible")
        assert "eerdere sleutel" in error.inner_text()
        page.get_by_label("Leeswachtzin", exact=True).fill(PASSPHRASE)
        page.locator("#unlock").get_by_role("button", name="Openen").click()
        page.locator("#opened").wait_for(state="visible", timeout=30_000)
        assert "Jeroen Brünhilde telefoon" in page.locator("#opened").inner_text()
        browser.close()
    assert len(audit(app, "key changed")) == 1
    failed = {a["reference"]: a["detail"] for a in audit(app, "read", "failed")}
    assert failed == {foreign: "not encrypted to any of the reader's keys",
                      broken: "the ciphertext is damaged (integrity check failed)"}


def _no_sideways_scroll(page: Page) -> bool:
    widths = page.evaluate("() => [document.scrollingElement.scrollWidth, "
                           "document.scrollingElement.clientWidth]")
    return bool(widths[0] <= widths[1])


def test_key_locks_after_the_idle_time_and_a_browser_without_javascript_gets_downloads(
        live: tuple[Flask, str], tmp_path: Path) -> None:
    app, base = live
    link = invite(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context()
        page = context.new_page()
        page.clock.install()  # time flows as usual; the test may jump it forward
        accept_invitation(page, link)
        make_key(page)
        ref = post_form(app.test_client(), valid_answers("even weg"), json_answer=True,
                        headers={"Origin": base}).get_json()["reference"]
        page.goto(f"{base}/clinician/")
        open_in_page(page, ref)
        page.locator("#opened").wait_for(state="visible", timeout=30_000)
        page.clock.fast_forward("15:01")  # the session's idle time, and a minute more
        page.locator("#unlock").wait_for(state="visible")
        assert "vergrendeld" in page.locator("#read-error").inner_text()
        assert page.locator("#opened").is_hidden()
        assert "even weg" not in page.content()  # what was shown is gone from the page

        # the same session in a browser without JavaScript: the notice and the downloads
        plain = browser.new_context(java_script_enabled=False)
        plain.add_cookies(context.cookies())
        bare = plain.new_page()
        bare.goto(f"{base}/clinician/key/")
        assert bare.locator("#unsupported").is_visible()
        assert "Firefox, Chrome, Edge of Safari" in bare.locator("#unsupported").inner_text()
        assert bare.locator("#make-key").is_hidden()
        bare.goto(f"{base}/clinician/")
        row = bare.locator(f"#row-{ref}")
        assert row.get_by_role("link", name=".eml").is_visible()
        assert row.get_by_role("button", name="Openen").is_hidden()
        browser.close()
