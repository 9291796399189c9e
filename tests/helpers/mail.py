"""Mail delivery on a moved clock: an app that sends to the loopback SMTP server, a
post, one delivery round and the attachments of what arrived."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

from flask import Flask

from formrelay import services
from formrelay.mail import outbox

from ..conftest import post_form
from ..smtpd import TlsFiles, smtp_config

FIELDS: list[dict[str, Any]] = [
    {"name": "volledige_naam", "type": "text", "label": "Volledige naam", "required": True},
    {"name": "klachtomschrijving", "type": "textarea", "label": "Omschrijving van de klacht",
     "required": True},
    {"name": "verwijsbrief", "type": "file", "label": "Verwijsbrief", "accept": ["pdf"]},
    {"name": "knie_foto", "type": "file", "label": "Foto van de knie", "accept": ["png"]},
]


OPERATOR = "beheer@praktijk.test"


class Clock:
    """A clock the test moves forward (backoff and leases without sleeping); it also
    ticks 10 ms per reading, like a real one."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=10)
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def mail_app(make_app: Callable[..., Flask], tls: TlsFiles, port: int, *,
             smtp: dict[str, Any] | None = None, **kw: Any) -> Flask:
    return make_app(delivery="email", fields=kw.pop("fields", FIELDS),
                    smtp=smtp or smtp_config(tls, port),
                    server={"operator_email": OPERATOR, "rate_limit_ip": "1000/minute",
                            **kw.pop("server", {})}, **kw)


def submit(app: Flask, mark: str = "", **files: tuple[bytes, str]) -> str:
    data: dict[str, Any] = {"volledige_naam": f"Jeroen Brünhilde {mark}".strip(),
                            "klachtomschrijving": f"Pijn in de knie 🦵, ça va {mark}".strip()}
    data.update({k: (io.BytesIO(v[0]), v[1]) for k, v in files.items()})
    r = post_form(app.test_client(), data, json_answer=True)
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["reference"])


def deliver(app: Flask) -> outbox.PassResult:
    relay = app.extensions["formrelay"]
    return outbox.deliver_pending(relay.settings, relay.store, kinds=services.mail_kinds())


def store_of(app: Flask) -> Any:
    return app.extensions["formrelay"].store


def attachment(msg: Message, filename: str) -> bytes:
    part = next(p for p in msg.walk() if p.get_filename() == filename)
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data
