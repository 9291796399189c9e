"""The patient-copy tests' form, answers and readers: the thank-you page's pickup
details, the PDF's text, a copy picked up over HTTP."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any

import pypdf
from flask.testing import FlaskClient

from ..smtpd import TlsFiles

FIELDS: list[dict[str, Any]] = [
    {"name": "name", "type": "text", "label": "Naam", "required": True},
    {"name": "email", "type": "email", "label": "E-mail"},
    {"name": "complaint", "type": "textarea", "label": "Klacht", "required": True},
    {"name": "symptoms", "type": "checkboxes", "label": "Klachten",
     "choices": ["hoofdpijn", "koorts", "overig"]},
    {"name": "letter", "type": "file", "label": "Verwijsbrief", "accept": ["pdf"]},
]


class Clock:
    def __init__(self) -> None:
        # whole seconds: form tokens store the time rounded to milliseconds
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def smtp_cfg(tls: TlsFiles, port: int) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "security": "starttls",
            "ca_file": str(tls.ca), "from_address": "forms@praktijk.test"}


def answers(mark: str) -> dict[str, Any]:
    long_text = " ".join(["Ik heb al weken last van mijn rechterknie"] * 30)
    return {"name": f"Zoë Ünal-Øster {mark}", "email": "zoe@example.nl",
            "complaint": f"Pijn bij het traplopen 😀, Ελληνικά, Київ. {long_text} {mark}",
            "symptoms": ["hoofdpijn", "koorts"],
            "letter": (io.BytesIO(b"%PDF-1.4 verwijzing"), "verwijzing huisarts.pdf"),
            "_copy": "1"}


def thanks(r: Any) -> dict[str, str]:
    """What the thank-you page shows: the code and the "download now" form."""
    html = r.get_data(as_text=True)
    assert r.status_code == 200, html
    code = re.search(r'id="pickup-code">([^<]+)<', html)
    form = re.search(r'action="(/copy/[^"?]+)[^"]*"', html)
    key = re.search(r'name="key" value="([^"]+)"', html)
    grant = re.search(r'name="grant" value="([^"]+)"', html)
    ref = re.search(r'id="reference">([^<]+)<', html)
    assert code and form and key and grant and ref, html
    return {"code": code.group(1), "url": form.group(1), "key": key.group(1),
            "grant": grant.group(1), "reference": ref.group(1), "html": html}


def pdf_text(data: bytes) -> str:
    text = "".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(data)).pages)
    return re.sub(r"\s+", " ", text.replace("\u200b", "")).strip()


def pick(client: FlaskClient, url: str, key: str, code: str = "", grant: str = "",
         lang: str = "") -> Any:
    data = {"key": key, "code": code, "grant": grant}
    return client.post(url + (f"?lang={lang}" if lang else ""), data=data)


# RFC 2047 encoded words that email-validator accepts but the email package decodes in
# a header: into a line break (the mail could never be built) or into another address
ENCODED = ["=?utf-8?b?DQpCY2M6IHpAcQ==?=@example.org", "=?utf-8?q?x=40y?=@example.org"]
