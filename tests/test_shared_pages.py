"""Pages that belong to no practice name none: on an instance whose practices all come
from practice files, the clinician login, an unknown form and a broken copy link never
show one practice's name or phone number to another practice's patients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from formrelay import create_app

from .conftest import ENV, make_config_dict, write_config
from .helpers.practices import NOORD_NAME, NOORD_PHONE, noord
from .keys import TestKey

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

ZUID_NAME, ZUID_PHONE = "Gezondheidscentrum Zuid", "040 123 9876"


def zuid(keys: dict[str, TestKey]) -> dict[str, Any]:
    p = noord(keys)
    p.update(name=ZUID_NAME, phone=ZUID_PHONE, email="balie@zuid.test",
             from_address="formulieren@zuid.test", operator_email="beheer@zuid.test")
    p["recipients"] = {"carol": {"email": "carol@zuid.test", "key_file": str(keys["alice"].public),
                                 "fingerprint": keys["alice"].fingerprint}}
    p["forms"] = {"zuid-intake": {**p["forms"]["noord-intake"], "title": "Aanmelden Zuid",
                                  "recipients": ["carol"]}}
    return p


@pytest.fixture
def files_only(tmp_path: Path, keys: dict[str, TestKey]) -> Flask:
    """Two practices from practice files, none in config.toml itself."""
    cfg = make_config_dict(tmp_path / "data", keys)
    for key in ("practice_name", "practice_phone"):
        del cfg["server"][key]
    del cfg["recipients"], cfg["forms"]
    cfg["server"]["practices_dir"] = "practices"
    (tmp_path / "practices").mkdir()
    write_config(tmp_path / "practices" / "noord.toml", noord(keys))
    write_config(tmp_path / "practices" / "zuid.toml", zuid(keys))
    app = create_app(write_config(tmp_path / "config.toml", cfg), environ=ENV)
    app.testing = True
    return app


@pytest.mark.parametrize("path", ["/clinician/login", "/f/nope", "/copy/abc.def",
                                  "/clinician/login?lang=en"])
def test_a_page_of_no_practice_names_none(files_only: Flask, path: str) -> None:
    page = files_only.test_client().get(path).get_data(as_text=True)
    for name, phone in ((NOORD_NAME, NOORD_PHONE), (ZUID_NAME, ZUID_PHONE)):
        assert name not in page and phone not in page, page
    assert page.rstrip().endswith("</html>")  # the whole page, not a bare error


def test_a_form_page_still_names_its_own(files_only: Flask) -> None:
    client = files_only.test_client()
    noord_page = client.get("/f/noord-intake").get_data(as_text=True)
    assert NOORD_NAME in noord_page and NOORD_PHONE in noord_page
    assert ZUID_NAME not in noord_page
    zuid_page = client.get("/f/zuid-intake").get_data(as_text=True)
    assert ZUID_NAME in zuid_page and ZUID_PHONE in zuid_page
    assert NOORD_NAME not in zuid_page
