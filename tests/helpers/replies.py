"""The patient-reply flow: a form with an email, a clinician's answer, the patient's read."""

from __future__ import annotations

import re
from typing import Any

from ..area import Browser
from ..conftest import post_form

FIELDS = [{"name": "name", "type": "text", "label": "Naam", "required": True},
          {"name": "email", "type": "email", "label": "E-mail"},
          {"name": "question", "type": "textarea", "label": "Vraag"}]


def send_form(client: Any, email: str = "zoe@example.nl") -> tuple[str, str]:
    r = post_form(client, {"name": "Zoë", "email": email, "question": "Mag ik sporten?"})
    html = r.get_data(as_text=True)
    assert r.status_code == 200, html
    ref = re.search(r'id="reference">([^<]+)<', html)
    code = re.search(r'id="reply-code">([^<]+)<', html)
    assert ref and code, html
    return ref.group(1), code.group(1)


def write_answer(b: Browser, reference: str, text: str) -> None:
    page = b.get(f"/clinician/answer/{reference}")
    assert page.status_code == 200, page.get_data(as_text=True)
    r = b.post(f"/clinician/answer/{reference}", {"answer": text})
    assert r.status_code == 302, r.get_data(as_text=True)


def read(client: Any, reference: str, code: str) -> Any:
    return client.post("/r/?lang=en", data={"reference": reference, "code": code})
