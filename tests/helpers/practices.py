"""A second practice (noord) beside the default one, and an app with a clinician in
each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from formrelay import create_app

from ..area import Clock, add_user
from ..conftest import ENV, make_config_dict, post_form, write_config
from ..keys import TestKey

NOORD_NAME, NOORD_PHONE = "Huisartsenpraktijk Noord", "050 765 4321"


NOORD_FROM, NOORD_OPERATOR = "formulieren@noord.test", "beheer@noord.test"


FIELDS = [{"name": "name", "type": "text", "label": "Naam", "required": True},
          {"name": "email", "type": "email", "label": "E-mail"},
          {"name": "complaint", "type": "textarea", "label": "Klacht", "required": True}]


def valid_answers(mark: str = "") -> dict[str, str]:
    return {"name": f"Jeroen Brünhilde {mark}".strip(), "complaint": "Pijn in de knie"}


def noord(keys: dict[str, TestKey], **form: Any) -> dict[str, Any]:
    """A second practice: its own details, look, recipient (bob) and form."""
    return {"name": NOORD_NAME, "phone": NOORD_PHONE, "email": "assistente@noord.test",
            "operator_email": NOORD_OPERATOR, "from_address": NOORD_FROM,
            "timezone": "America/New_York", "theme": {"accent": "#2b6e3f"},
            "recipients": {"bob": {"email": "bob@noord.test", "key_file": str(keys["bob"].public),
                                   "fingerprint": keys["bob"].fingerprint}},
            "forms": {"noord-intake": {"title": "Aanmelden Noord", "recipients": ["bob"],
                                       "delivery": "hold", "fields": FIELDS, **form}}}


def two_practices(tmp_path: Path, keys: dict[str, TestKey], **form: Any) -> dict[str, Any]:
    cfg = make_config_dict(tmp_path / "data", keys, fields=FIELDS,
                           server={"operator_email": "beheer@praktijk.test"}, **form)
    cfg["practices"] = {"noord": noord(keys, **form)}
    return cfg


def make(tmp_path: Path, cfg: dict[str, Any], clock: Any = None) -> Flask:
    app = create_app(write_config(tmp_path / "config.toml", cfg), environ=ENV, clock=clock)
    app.testing = True
    return app


def practices_with_clinicians(tmp_path: Path, keys: dict[str, TestKey], clock: Clock,
                              **form: Any) -> tuple[Flask, str, str]:
    """Two practices with a clinician each (default: anna, alice's forms; noord: bram,
    bob's) and one submission each: the app and the two references."""
    app = make(tmp_path, two_practices(tmp_path, keys, **form), clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    add_user(tmp_path, "bram", "--practice", "noord", "--recipient", "bob")
    client = app.test_client()
    mine = post_form(client, valid_answers(), json_answer=True).get_json()["reference"]
    theirs = post_form(client, valid_answers(), form_id="noord-intake",
                       json_answer=True).get_json()["reference"]
    return app, mine, theirs
