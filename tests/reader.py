"""Helpers for the browser reader's tests: a live app whose form goes to a recipient whose
key is made in the browser, the invitation, and gpg/rnp/OpenPGP.js with a locked key."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
from flask import Flask
from playwright.sync_api import Page

from formrelay import create_app

from .area import PASSWORD, cli_run
from .conftest import ENV, make_config_dict, write_config
from .helpers.browser import serving_in_thread
from .keys import TestKey
from .smtpd import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
PASSPHRASE = "mijn eigen leeszin voor formulieren"  # noqa: S105 - a test value
NEW_PASSPHRASE = "een nieuwe leeszin na het herstelblad"  # noqa: S105 - a test value
VENDORED = Path(__file__).parent.parent / "formrelay" / "static" / "vendor"
NODE_TRY = Path(__file__).parent / "openpgp_try.js"


def reader_config(tmp_path: Path, keys: dict[str, TestKey], base: str, **form: Any) -> Path:
    """The form `intake` goes to `reader`, a recipient with key_source = "browser"."""
    form.setdefault("smtp", {"from_address": "forms@praktijk.test"})  # no relay: links printed
    server = {"base_url": base, **form.pop("server", {})}
    cfg = make_config_dict(tmp_path / "data", keys, server=server, **form)
    cfg["recipients"] = {"reader": {"email": "reader@praktijk.test", "key_source": "browser"}}
    cfg["forms"]["intake"]["recipients"] = ["reader"]
    return write_config(tmp_path / "config.toml", cfg)


def serve(tmp_path: Path, keys: dict[str, TestKey], **form: Any) -> Iterator[tuple[Flask, str]]:
    port = free_port()
    base = f"http://localhost:{port}"
    app = create_app(reader_config(tmp_path, keys, base, **form), environ=ENV)
    app.testing = True
    with serving_in_thread(app, port):
        yield app, base


def invite(tmp_path: Path, name: str = "anna") -> str:
    """The invitation link (no [smtp] relay here: the CLI prints it)."""
    out = cli_run(tmp_path, "users", "invite", name, "--email", f"{name}@praktijk.test",
                  "--recipient", "reader").output
    return re.search(r"http://\S+/clinician/invite/\S+", out).group(0)  # type: ignore[union-attr]


def accept_invitation(page: Page, link: str, then: str = "**/clinician/key/") -> None:
    """Link, password, authenticator app, recovery codes: on to the key page (`then`:
    where the account goes next; an assistant makes no key and goes to the list)."""
    page.goto(link)
    page.get_by_label("Nieuw wachtwoord", exact=True).fill(PASSWORD)
    page.get_by_label("Nieuw wachtwoord nogmaals").fill(PASSWORD)
    page.get_by_role("button", name="Volgende").click()
    page.wait_for_url("**/clinician/enrol")
    secret = page.locator("#secret").inner_text().replace(" ", "")
    page.get_by_label("Code", exact=True).fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Bevestigen").click()
    page.get_by_role("link", name="Ik heb ze bewaard, verder").click()
    page.wait_for_url(then)


def make_key(page: Page, passphrase: str = PASSPHRASE) -> tuple[str, str]:
    """Make the key in the page; (fingerprint, recovery key) from the recovery sheet,
    then activate it."""
    page.get_by_label("Leeswachtzin", exact=True).fill(passphrase)
    page.get_by_label("Leeswachtzin nogmaals", exact=True).fill(passphrase)
    page.get_by_role("button", name="Maak mijn sleutel").click()
    page.locator("#sheet").wait_for(state="visible", timeout=60_000)
    fingerprint = page.locator("#fingerprint").inner_text().replace(" ", "")
    recovery = page.locator("#recovery-key").inner_text()
    page.get_by_label("Ik heb de herstelsleutel geprint").check()
    page.get_by_role("button", name="Activeer mijn sleutel").click()
    page.wait_for_url("**/clinician/")
    return fingerprint, recovery


def gpg_with_locked_key(locked: str, passphrase: str,
                        data: bytes) -> subprocess.CompletedProcess[bytes]:
    """Import a locked private key into a fresh GnuPG home and decrypt `data` with
    `passphrase` (loopback pinentry: gpg asks no one)."""
    with tempfile.TemporaryDirectory() as home:
        base = ["gpg", "--homedir", home, "--batch", "--no-random-seed-file",
                "--pinentry-mode", "loopback"]
        subprocess.run([*base, "--import"], input=locked.encode(), check=True,
                       capture_output=True, timeout=60)
        (Path(home) / "message.asc").write_bytes(data)
        try:
            return subprocess.run([*base, "--passphrase-fd", "0", "--no-symkey-cache",
                                   "--decrypt", str(Path(home) / "message.asc")],
                                  input=passphrase.encode() + b"\n", capture_output=True,
                                  timeout=120)
        finally:
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"],
                           capture_output=True, timeout=30, check=False)


def rnp_with_locked_key(locked: str, passphrase: str,
                        data: bytes) -> subprocess.CompletedProcess[bytes]:
    with tempfile.NamedTemporaryFile("w", suffix=".asc") as fh:
        fh.write(locked)
        fh.flush()
        return subprocess.run(["rnp", "--keyfile", fh.name, "--password", passphrase,
                               "--decrypt", "--output", "-"], input=data,
                              capture_output=True, timeout=120)


def openpgp_unlocks(locked: str, candidates: list[str]) -> list[str]:
    """The candidates that unlock `locked`, tried by the vendored OpenPGP.js in node."""
    import json

    vendored = json.loads((VENDORED / "openpgp.json").read_text())["file"]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
        json.dump({"key": locked, "candidates": candidates}, fh)
        fh.flush()
        out = subprocess.run(["node", str(NODE_TRY), str(VENDORED / vendored), fh.name],
                             capture_output=True, text=True, timeout=600, check=True).stdout
    return list(json.loads(out))


def node_key(passphrase: str = PASSPHRASE, recovery: str = "HERS-TELS-LEUT") -> dict[str, str]:
    """A reader key made by the vendored OpenPGP.js, as the page makes it."""
    import json

    vendored = json.loads((VENDORED / "openpgp.json").read_text())["file"]
    out = subprocess.run(["node", str(Path(__file__).parent / "openpgp_make.js"),
                          str(VENDORED / vendored), passphrase, recovery],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    made: dict[str, str] = json.loads(out)
    return made


def open_in_page(page: Page, reference: str, passphrase: str = PASSPHRASE) -> None:
    """From the inbox: open one submission, typing the passphrase if the page asks."""
    page.locator(f"#row-{reference}").get_by_role("button", name="Openen").click()
    if page.locator("#unlock").is_visible():
        page.get_by_label("Leeswachtzin", exact=True).fill(passphrase)
        page.locator("#unlock").get_by_role("button", name="Openen").click()


def hold(app: Flask, ciphertext: bytes, tmp_path: Path) -> str:
    """Store `ciphertext` as a held submission of `intake` (for what the relay never
    writes: a message to another key, a damaged one); returns its reference."""
    from formrelay.intake.submission import new_reference
    from formrelay.localtime import iso

    services = app.extensions["formrelay"]
    store, spec = services.store, services.settings.forms["intake"]
    ref = new_reference()
    path = tmp_path / f"{ref}.asc"
    path.write_bytes(ciphertext)
    # whose it is, recorded as the relay records it (access is decided from the record)
    store.submissions.add({"reference": ref, "form_id": "intake",
                           "received_at": iso(store.clock()), "delivery": "hold",
                           "status": "held", "file_count": 0, "practice": spec.practice,
                           "recipients": json.dumps(list(spec.recipients)),
                           "fingerprints": "[]", "keep_days": spec.retention_days}, path)
    path.unlink()
    return ref


def damaged(ciphertext: bytes) -> bytes:
    """The armoured message with one base64 character changed in the encrypted data."""
    lines = ciphertext.split(b"\n")
    at = len(lines) // 2
    line = lines[at]
    lines[at] = line[:10] + (b"A" if line[10:11] != b"A" else b"B") + line[11:]
    return b"\n".join(lines)


def gpg_encrypt(key: TestKey, data: bytes) -> bytes:
    """`data` encrypted to a test key (a message the reader's key cannot open)."""
    return subprocess.run(["gpg", "--homedir", str(key.home), "--batch", "--armor",
                           "--trust-model", "always", "--encrypt", "--recipient",
                           key.fingerprint], input=data, check=True, capture_output=True,
                          timeout=60).stdout
