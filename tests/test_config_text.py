"""Configured text that can reach a mail header (a practice's name in From, a sender, a
subject, a form's title in the protected subject) holds no line break or other control
character: the file is refused when it is loaded - naming the file and the key - and
a running service keeps the configuration it had, instead of promising a patient a
copy whose mail then cannot be built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from formrelay import create_app
from formrelay.config import ConfigError, load_config
from formrelay.reload import Live

from .conftest import ENV, make_config_dict, post_form, write_config
from .helpers.practices import noord, valid_answers
from .keys import TestKey

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def _practice_file(tmp_path: Path, keys: dict[str, TestKey], **change: Any) -> Path:
    """config.toml with practices_dir, and practices/noord.toml holding `change`."""
    cfg = make_config_dict(tmp_path / "data", keys, server={"practices_dir": "practices"})
    config = write_config(tmp_path / "config.toml", cfg)
    (tmp_path / "practices").mkdir(exist_ok=True)
    practice = noord(keys)
    for key, value in change.items():
        where = practice
        *path, last = key.split(".")
        for part in path:
            where = where[part]
        where[last] = value
    write_config(tmp_path / "practices" / "noord.toml", practice)
    return config


@pytest.mark.parametrize(("key", "value", "named"), [
    ("name", "Praktijk Noord\r\nBcc: everyone@example.org", "a carriage return"),
    ("name", "Praktijk Noord\nX-Evil: 1", "a line break"),
    ("name", "Praktijk\u2028Noord", "the control character U+2028"),  # line separator
    ("name", "Praktijk\x85Noord", "the control character U+0085"),  # NEL
    ("phone", "050\t765 4321", "a tab"),
    ("from_address", "formulieren@noord.test\r\nBcc: x@example.org", "a carriage return"),
    ("recipients.bob.email", "bob@noord.test\nCc: x@example.org", "a line break"),
    ("forms.noord-intake.title", "Aanmelden\r\nSubject: spoed", "a carriage return"),
    ("forms.noord-intake.title_en", "Sign up\nX: y", "a line break"),
])
def test_control_characters_in_a_practice_file_are_refused(
        tmp_path: Path, keys: dict[str, TestKey], key: str, value: str, named: str) -> None:
    config = _practice_file(tmp_path, keys, **{key: value})
    with pytest.raises(ConfigError) as err:
        load_config(config, ENV)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'practices' / 'noord.toml'}: "), text
    assert f"{key.split('.')[-1]}: contains {named}" in text, text
    assert "write it on one line" in text


@pytest.mark.parametrize(("section", "key"), [
    ("server", "practice_name"), ("server", "copy_mail_subject"),
    ("smtp", "from_address"), ("server", "operator_email")])
def test_control_characters_in_config_toml_are_refused(
        tmp_path: Path, keys: dict[str, TestKey], section: str, key: str) -> None:
    cfg = make_config_dict(tmp_path / "data", keys)
    cfg[section][key] = "forms@praktijk.test\r\nBcc: x@example.org"
    config = write_config(tmp_path / "config.toml", cfg)
    with pytest.raises(ConfigError, match=f"^{config}: {section}.{key}: contains a carriage "
                                          r"return \(\\r\); write it on one line"):
        load_config(config, ENV)


def test_texts_shown_only_inside_a_page_may_hold_line_breaks(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    config = _practice_file(tmp_path, keys, **{
        "forms.noord-intake.notice": "Bij spoed:\nbel 112",
        "forms.noord-intake.intro": "Regel een\r\nregel twee\tmet tab"})
    spec = load_config(config, ENV).forms["noord-intake"]
    assert spec.notice == "Bij spoed:\nbel 112"
    bad = _practice_file(tmp_path, keys, **{"forms.noord-intake.notice": "spoed\x1b[31m"})
    with pytest.raises(ConfigError, match=r"forms.noord-intake.notice: contains the control "
                                          "character U\\+001B; remove it"):
        load_config(bad, ENV)


def test_a_reload_with_a_control_character_keeps_the_old_configuration(
        tmp_path: Path, keys: dict[str, TestKey], caplog: pytest.LogCaptureFixture) -> None:
    config = _practice_file(tmp_path, keys)
    app = create_app(config, environ=ENV)
    app.testing = True
    live: Live = app.extensions["formrelay.live"]
    _practice_file(tmp_path, keys, name="Praktijk Noord\r\nBcc: everyone@example.org")
    live.ask()
    client = app.test_client()
    r = post_form(client, valid_answers(), form_id="noord-intake", json_answer=True)
    assert r.status_code == 200, r.get_json()  # still taking posts, under the old name
    assert live.current.settings.practices["noord"].name == "Huisartsenpraktijk Noord"
    assert "practices/noord.toml: practice.name: contains a carriage return" in caplog.text
