"""The last good configuration (data_dir/last-good-config.json) damaged or changed by
someone other than formrelay, while the configuration files are broken: a start never
fails with a traceback about the kept file, never serves a configuration formrelay did
not keep itself (another key for a recipient), and says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from formrelay import reload
from formrelay.config import ConfigError
from formrelay.reload import LAST_GOOD, serving_settings

from .conftest import ENV
from .helpers.recycle import configure, practice
from .keys import TestKey

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def broken_after_a_good_start(tmp_path: Path, keys: dict[str, TestKey],
                              monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    config = configure(tmp_path, keys, "http://localhost",
                       zuid=practice("Praktijk Zuid", "dr-b", keys["alice"], "b-hold"))
    serving_settings(config, ENV)  # a serving process took it: kept
    zuid = tmp_path / "practices" / "zuid.toml"
    zuid.write_text(zuid.read_text()[:40])  # then the file broke
    monkeypatch.setattr(reload, "_data_dirs", {})  # a new process (a restart)
    return config, tmp_path / "data" / LAST_GOOD


@pytest.mark.parametrize("damage", [
    "null", "[]", '"text"', "{}", '{"config": "CONFIG"}',
    '{"config": "CONFIG", "files": "not a table"}',
    '{"config": "CONFIG", "files": {"CONFIG": 42}}',
    '{"config": "CONFIG", "files": FILES, "stamps": [["too short"]]}',
    '{"config": "CONFIG", "files": FILES, "stamps": "x"}',
], ids=range(9))
def test_a_damaged_last_good_file_stops_the_start_with_the_files_problem(
        tmp_path: Path, keys: dict[str, TestKey], monkeypatch: pytest.MonkeyPatch,
        damage: str) -> None:
    config, kept = broken_after_a_good_start(tmp_path, keys, monkeypatch)
    files = json.dumps(json.loads(kept.read_text())["files"])
    kept.write_text(damage.replace("CONFIG", str(config)).replace("FILES", files))
    with pytest.raises(ConfigError, match="zuid.toml: not valid TOML"):
        serving_settings(config, ENV)


def test_a_last_good_file_changed_outside_formrelay_is_not_served(
        tmp_path: Path, keys: dict[str, TestKey], monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever can write the data folder (but not the configuration files) puts their
    own key in place of dr-b's in the kept file: posts to b-hold must never be encrypted
    to it."""
    config, kept = broken_after_a_good_start(tmp_path, keys, monkeypatch)
    data = json.loads(kept.read_text())
    zuid = next(p for p in data["files"] if p.endswith("zuid.toml"))
    alice, bob = keys["alice"], keys["bob"]
    data["files"][zuid] = data["files"][zuid].replace(str(alice.public), str(bob.public)) \
        .replace(alice.fingerprint, bob.fingerprint)
    assert bob.fingerprint in data["files"][zuid]
    kept.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="zuid.toml: not valid TOML"):
        serving_settings(config, ENV)
