"""Two practice files (noord and zuid) whose rows record their owner, and the app
reloaded after one of them changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from formrelay import create_app
from formrelay.services import Services

from ..area import Clock
from ..conftest import ENV, make_config_dict, write_config
from ..keys import TestKey

FIELDS = [{"name": "name", "type": "text", "label": "Naam", "required": True},
          {"name": "email", "type": "email", "label": "E-mail"},
          {"name": "complaint", "type": "textarea", "label": "Klacht", "required": True}]


ZUID_NAME, ZUID_PHONE, ZUID_FROM = "Praktijk Zuid", "040 222 2222", "forms@zuid.test"


NOORD_NAME, NOORD_PHONE, NOORD_FROM = "Praktijk Noord", "050 111 1111", "forms@noord.test"


INSTANCE_OPERATOR = "beheer@formrelay.test"


def practice_file(keys: dict[str, TestKey], which: str, **extra_forms: Any) -> dict[str, Any]:
    """noord: dr-a (alice's key), forms a-hold and a-mail; zuid: dr-b (bob's key), forms
    b-hold and b-mail. Each with its own name, phone, sender and operator."""
    letter, key, name, phone, sender = (
        ("a", "alice", NOORD_NAME, NOORD_PHONE, NOORD_FROM) if which == "noord" else
        ("b", "bob", ZUID_NAME, ZUID_PHONE, ZUID_FROM))
    rid = f"dr-{letter}"
    forms = {f"{letter}-hold": {"title": f"Intake {which}", "recipients": [rid],
                                "delivery": "hold", "fields": FIELDS, "patient_copy": True},
             f"{letter}-mail": {"title": f"Vraag {which}", "recipients": [rid],
                                "delivery": "email", "fields": FIELDS, "patient_copy": True}}
    forms.update(extra_forms)
    return {"name": name, "phone": phone, "from_address": sender,
            "operator_email": f"beheer@{which}.test",
            "recipients": {rid: {"email": f"{rid}@{which}.test",
                                 "key_file": str(keys[key].public),
                                 "fingerprint": keys[key].fingerprint}},
            "forms": forms}


def two_practice_files(tmp_path: Path, keys: dict[str, TestKey], *,
                       smtp: dict[str, Any] | None = None) -> Path:
    """A config of no default practice: noord.toml and zuid.toml in practices/."""
    cfg = make_config_dict(tmp_path / "data", keys, server={
        "practices_dir": "practices", "operator_email": INSTANCE_OPERATOR})
    del cfg["forms"], cfg["recipients"], cfg["server"]["practice_name"]
    del cfg["server"]["practice_phone"]
    if smtp is not None:
        cfg["smtp"] = smtp
    (tmp_path / "practices").mkdir(exist_ok=True)
    for which in ("noord", "zuid"):
        write_config(tmp_path / "practices" / f"{which}.toml", practice_file(keys, which))
    return write_config(tmp_path / "config.toml", cfg)


def reload(app: Flask) -> Services:
    live = app.extensions["formrelay.live"]
    live.ask()  # as SIGHUP does
    assert live.check(), "the configuration was not reloaded"
    services: Services = live.current
    return services


def make(config: Path, clock: Clock | None = None) -> Flask:
    app = create_app(config, environ=ENV, clock=clock)
    app.testing = True
    return app
