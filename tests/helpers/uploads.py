"""Upload links and uploads: the offer on the thank-you page, the link in the mail,
an encrypted file sent in pieces, a clinician who creates links."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from flask import Flask

from formrelay import services
from formrelay.mail import outbox
from formrelay.uploads.links import UploadLinks

from ..area import Browser, Clock, add_user, totp_at
from ..conftest import post_form


def deliver(app: Flask) -> None:
    s = app.extensions["formrelay"]
    outbox.deliver_pending(s.settings, s.store, kinds=services.mail_kinds())


def links_of(app: Flask, clock: Any = None) -> UploadLinks:
    s = app.extensions["formrelay"]
    return UploadLinks(s.settings, s.store, clock or s.clock)


def submit(client: Any, mark: str) -> tuple[str, str]:
    """Send the form; the thank-you page's reference and upload offer token."""
    r = post_form(client, {"name": f"Jan {mark}", "complaint": f"Knie {mark}", "consent": "y"})
    html = r.get_data(as_text=True)
    assert r.status_code == 200, html
    ref = re.search(r'id="reference">([^<]+)<', html)
    offer = re.search(r'name="offer" value="([^"]+)"', html)
    assert ref and offer, html
    assert "Send me a link to upload documents" in html or "uploaden" in html
    return ref.group(1), offer.group(1)


def link_in(body: str) -> str:
    m = re.search(r"http://localhost(/u/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", body)
    assert m, body
    return m.group(1)


MB = 1024 * 1024


def new_link(app: Flask, email: str = "zoe@example.nl") -> str:
    s = app.extensions["formrelay"]
    made = UploadLinks(s.settings, s.store, s.clock).for_practice("default", email, "nl",
                                                                   actor="operator")
    return made.link.rsplit("/u/", 1)[1]


def encrypt_binary(app: Flask, data: bytes, fingerprints: list[str]) -> bytes:
    """What the browser sends: a binary OpenPGP message (SEIPD v1) to the keys."""
    gpg = app.extensions["formrelay"].keyring.gpg
    out = gpg.encrypt(data, fingerprints, armor=False, always_trust=True,
                      extra_args=["--rfc4880", "--compress-algo", "none"])
    assert out.ok, out.status
    return bytes(out.data)


def create(client: Any, token: str, size: int) -> str:
    r = client.post(f"/u/{token}/files", json={"size": size})
    assert r.status_code == 201, r.get_data(as_text=True)
    return str(r.get_json()["id"])


def patch(client: Any, token: str, fid: str, offset: int, chunk: bytes,
          checksum: str | None = None) -> Any:
    digest = hashlib.sha256(chunk).hexdigest() if checksum is None else checksum
    return client.patch(f"/u/{token}/files/{fid}", data=chunk,
                        headers={"Upload-Offset": str(offset),
                                 "Upload-Checksum": f"sha256 {digest}"})


def send_file(client: Any, token: str, ciphertext: bytes, chunk: int = MB) -> str:
    fid = create(client, token, len(ciphertext))
    n = 0
    for off in range(0, len(ciphertext), chunk):
        r = patch(client, token, fid, off, ciphertext[off:off + chunk])
        assert r.status_code == 204, r.get_data(as_text=True)
        n += 1
    r = client.post(f"/u/{token}/files/{fid}/done", json={"length": len(ciphertext),
                                                          "chunks": n})
    assert r.status_code == 200, r.get_data(as_text=True)
    return fid


def clinician(app: Flask, tmp_path: Path, clock: Clock) -> Browser:
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    r = b.enrol("anna", totp_at(clock))
    assert r.status_code in (200, 302)
    return b
