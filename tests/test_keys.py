"""Recipient keys: pinned, scanned before import, refused with a message that says why."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from formrelay import create_app
from formrelay.cli import cli
from formrelay.crypto.keyring import CryptoError, KeyRefused, Keyring
from formrelay.settings import Recipient

from .conftest import ENV, make_config_dict, post_form, valid_answers, write_config
from .keys import TestKey

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def recipient(key: TestKey, **kw: Any) -> Recipient:
    return Recipient(id=kw.pop("id", "dr-test"), email="dr@praktijk.test",
                     key_file=str(kw.pop("path", key.public)),
                     fingerprint=kw.pop("fingerprint", key.fingerprint))


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    return Keyring(tmp_path / "gnupg")


def test_good_key_is_usable(ring: Keyring, keys: dict[str, TestKey]) -> None:
    st = ring.import_recipient(recipient(keys["alice"]), keys["alice"].public)
    assert st.usable and not st.problem and not st.warning
    assert st.expires is not None and st.expires > datetime.now(UTC) + timedelta(days=300)


def test_rsa_2048_is_usable(ring: Keyring, keys: dict[str, TestKey]) -> None:
    assert ring.import_recipient(recipient(keys["bob"]), keys["bob"].public).usable


@pytest.mark.parametrize(("name", "problem"), [
    ("expired", "key expired on 2020-01-02"),
    ("revoked", "REVOKED"),
    ("signonly", "no usable encryption subkey"),
    ("weak", "1024 bits is too weak"),
])
def test_unusable_keys_are_refused(ring: Keyring, keys: dict[str, TestKey], name: str,
                                   problem: str) -> None:
    st = ring.import_recipient(recipient(keys[name]), keys[name].public)
    assert not st.usable
    assert problem in st.problem
    assert "dr-test" in st.line()
    assert "formrelay keys import" in st.problem or "new key" in st.problem


def test_fingerprint_mismatch(ring: Keyring, keys: dict[str, TestKey]) -> None:
    r = recipient(keys["alice"], fingerprint=keys["bob"].fingerprint)
    with pytest.raises(KeyRefused, match="dr-test: fingerprint mismatch.*check the fingerprint"):
        ring.import_recipient(r, keys["alice"].public)
    assert ring.gpg.list_keys() == []



def test_sync_sees_a_replaced_key_file_at_once(ring: Keyring, keys: dict[str, TestKey],
                                               tmp_path: Path) -> None:
    """A sync right after another (a config reload) reads only key files that changed:
    a file swapped for another key is refused at once, and put back it is usable."""
    path = tmp_path / "dr-test.asc"
    path.write_bytes(keys["alice"].public.read_bytes())
    recipients = {"dr-test": recipient(keys["alice"], path=path)}
    assert ring.sync(recipients, Path)["dr-test"].usable
    assert ring.sync(recipients, Path)["dr-test"].usable  # unchanged: the import stands
    path.write_bytes(keys["bob"].public.read_bytes())  # someone put the wrong key there
    st = ring.sync(recipients, Path)["dr-test"]
    assert not st.usable and "fingerprint mismatch" in st.problem
    path.unlink()
    assert "not found" in ring.sync(recipients, Path)["dr-test"].problem
    path.write_bytes(keys["alice"].public.read_bytes())
    assert ring.sync(recipients, Path)["dr-test"].usable

def test_secret_key_material_is_refused(ring: Keyring, keys: dict[str, TestKey]) -> None:
    assert keys["alice"].secret is not None
    with pytest.raises(KeyRefused, match="SECRET key material"):
        ring.import_recipient(recipient(keys["alice"]), keys["alice"].secret)
    assert ring.gpg.list_keys(secret=True) == []


def test_missing_and_garbage_files(ring: Keyring, keys: dict[str, TestKey],
                                   tmp_path: Path) -> None:
    with pytest.raises(KeyRefused, match="not found"):
        ring.import_recipient(recipient(keys["alice"]), tmp_path / "nope.asc")
    junk = tmp_path / "junk.asc"
    junk.write_text("not a key")
    with pytest.raises(KeyRefused, match="holds no OpenPGP key"):
        ring.import_recipient(recipient(keys["alice"]), junk)


def test_two_keys_in_one_file_refused(ring: Keyring, keys: dict[str, TestKey],
                                      tmp_path: Path) -> None:
    both = tmp_path / "both.asc"
    both.write_bytes(keys["alice"].public.read_bytes() + keys["bob"].public.read_bytes())
    with pytest.raises(KeyRefused, match="holds 2 keys"):
        ring.import_recipient(recipient(keys["alice"]), both)


def test_expiry_warning_within_30_days(ring: Keyring, keys: dict[str, TestKey]) -> None:
    st = ring.import_recipient(recipient(keys["soon"]), keys["soon"].public)
    assert st.usable and "expires in" in st.warning
    later = ring.status(recipient(keys["soon"]), datetime.now(UTC) + timedelta(days=11))
    assert not later.usable and "expired" in later.problem


@pytest.mark.parametrize("name", ["expired", "revoked", "signonly", "weak"])
def test_form_with_unusable_key_fails_closed(make_app: Any, keys: dict[str, TestKey],
                                             name: str, logs: pytest.LogCaptureFixture) -> None:
    app: Flask = make_app(recipients=(name,))
    client = app.test_client()
    page = client.get("/f/intake")
    assert page.status_code == 503
    html = page.get_data(as_text=True)
    assert "tijdelijk niet beschikbaar" in html and "020 555 0101" in html
    r = post_form(client, valid_answers("geheim-antwoord"))
    assert r.status_code == 503
    j = post_form(client, valid_answers(), json_answer=True)
    assert j.status_code == 503 and j.get_json()["ok"] is False
    assert app.extensions["formrelay"].store.submissions.rows() == []
    assert any(name in rec.getMessage() and "unavailable" in rec.getMessage()
               for rec in logs.records)
    assert "geheim-antwoord" not in logs.text


def test_form_whose_key_file_is_missing_fails_closed(tmp_path: Path,
                                                     keys: dict[str, TestKey]) -> None:
    cfg = make_config_dict(tmp_path / "data", keys)
    cfg["recipients"]["alice"]["key_file"] = str(tmp_path / "gone.asc")
    app = create_app(write_config(tmp_path / "config.toml", cfg), environ=ENV)
    client = app.test_client()
    assert client.get("/f/intake").status_code == 503
    r = post_form(client, valid_answers("zonder-sleutel"), json_answer=True)
    assert r.status_code == 503 and "020 555 0101" in r.get_json()["error"]
    assert app.extensions["formrelay"].store.submissions.rows() == []
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["checks"]["keys"] == "error"


def test_gpg_failure_during_post_fails_closed(app: Flask, keys: dict[str, TestKey],
                                              logs: pytest.LogCaptureFixture) -> None:
    relay = app.extensions["formrelay"].relay
    client = app.test_client()
    post_form(client, valid_answers(), json_answer=True)  # warm up: the key is fine
    before = len(relay.store.submissions.rows())
    relay.keyring.gpg.gpgbinary = "/bin/false"  # gpg now fails on every call
    # with a file: gpg encrypts it (a post without one is encrypted in process)
    pdf = (io.BytesIO(b"%PDF-1.4 verwijzing"), "verwijzing.pdf")
    r = post_form(client, {**valid_answers("tijdens-storing"), "attachment": pdf},
                  json_answer=True)
    assert r.status_code == 503 and "020 555 0101" in r.get_json()["error"]
    assert len(relay.store.submissions.rows()) == before
    assert "encryption failed" in logs.text and "tijdens-storing" not in logs.text


def _cli(tmp_path: Path, keys: dict[str, TestKey], *args: str, **cfg: Any) -> Any:
    config = write_config(tmp_path / "config.toml",
                          make_config_dict(tmp_path / "data", keys, **cfg))
    return CliRunner().invoke(cli, ["--config", str(config), *args], env=ENV)


def test_keys_commands(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    r = _cli(tmp_path, keys, "keys", "import", recipients=("alice", "bob"))
    assert r.exit_code == 0, r.output
    assert f"imported alice {keys['alice'].fingerprint}: ok" in r.output
    r = _cli(tmp_path, keys, "keys", "list", recipients=("alice", "bob"))
    assert "alice <alice@praktijk.test>" in r.output and "alice@praktijk.test>" in r.output
    assert "cv25519" in r.output or "ed25519" in r.output
    r = _cli(tmp_path, keys, "keys", "check", recipients=("alice",))
    assert r.exit_code == 0 and ": ok" in r.output


def test_keys_check_exit_codes(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    r = _cli(tmp_path, keys, "keys", "check", recipients=("soon",))
    assert r.exit_code == 1 and "expires in" in r.output
    r = _cli(tmp_path, keys, "keys", "import", recipients=("revoked",))
    assert r.exit_code == 2 and "REVOKED" in r.output
    r = _cli(tmp_path, keys, "keys", "import", "nobody", recipients=("alice",))
    assert r.exit_code == 1 and "unknown recipient 'nobody'" in r.output


HANGS = {
    # stuck before reading anything (a lock, a dead agent)
    "before reading": 'echo run >> "{calls}"\necho $$ > "{pid}"\nexec sleep 600\n',
    # reads all of its input, then hangs in a child that still holds gpg's pipes
    "after reading": 'echo run >> "{calls}"\ncat > /dev/null\nsleep 600 &\n'
                     'echo $! > "{pid}"\nwait\n',
}


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not reaped


@pytest.mark.parametrize("hang", sorted(HANGS))
def test_hanging_gpg_is_stopped_and_the_form_shows_itself_unavailable(
        make_app: Any, tmp_path: Path, keys: dict[str, TestKey], hang: str,
        logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from formrelay.intake import relay as relay_module

    app: Flask = make_app(server={"gpg_timeout_seconds": 1})
    relay = app.extensions["formrelay"].relay
    client = app.test_client()
    assert client.get("/f/intake").status_code == 200
    calls, pidfile = tmp_path / "calls", tmp_path / "pid"
    script = tmp_path / "stuck-gpg"
    script.write_text("#!/bin/sh\n" + HANGS[hang].format(calls=calls, pid=pidfile))
    script.chmod(0o755)
    real = relay.keyring.gpg.gpgbinary
    relay.keyring.gpg.gpgbinary = str(script)

    pdf = (io.BytesIO(b"%PDF-1.4 verwijzing"), "verwijzing.pdf")  # gpg encrypts files
    r = post_form(client, {**valid_answers("tijdens-hangen"), "attachment": pdf})
    html = r.get_data(as_text=True)
    assert r.status_code == 503
    assert "tijdelijk niet beschikbaar" in html and "020 555 0101" in html
    assert relay.store.submissions.rows() == []
    assert not _running(int(pidfile.read_text()))  # the hung gpg was killed
    assert "gpg did not finish encrypting within 1 s" in logs.text
    assert "tijdens-hangen" not in logs.text
    assert relay.store.audit.rows()[-1]["detail"] == "encryption timed out"
    # the form says so at once: no gpg run, so no wait
    page = client.get("/f/intake")
    assert page.status_code == 503 and "020 555 0101" in page.get_data(as_text=True)
    j = post_form(client, valid_answers(), json_answer=True)
    assert j.status_code == 503 and j.get_json()["ok"] is False
    assert calls.read_text().count("run") == 1

    # the periodic recheck finds gpg still stuck: stopped again, still unavailable
    monkeypatch.setattr(relay_module, "KEY_RECHECK_SECONDS", 0)  # as if a minute passed
    assert client.get("/f/intake").status_code == 503
    assert calls.read_text().count("run") > 1
    assert not _running(int(pidfile.read_text()))
    assert "keys cannot be checked" in logs.text
    # gpg works again: so does the form
    relay.keyring.gpg.gpgbinary = real
    assert client.get("/f/intake").status_code == 200
    ok = post_form(client, valid_answers(), json_answer=True)
    assert ok.status_code == 200 and ok.get_json()["ok"] is True
    assert len(relay.store.submissions.rows()) == 1


def test_hanging_gpg_that_never_reads_a_large_input_is_stopped(
        keys: dict[str, TestKey], tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "gnupg", timeout=1)
    ring.import_recipient(recipient(keys["alice"]), keys["alice"].public)
    pidfile = tmp_path / "pid"
    script = tmp_path / "stuck-gpg"
    script.write_text(f'#!/bin/sh\necho $$ > "{pidfile}"\nexec sleep 600\n')
    script.chmod(0o755)
    ring.gpg.gpgbinary = str(script)
    out = tmp_path / "out.asc"
    # far more than a pipe holds: python-gnupg's writer blocks until gpg is killed
    with pytest.raises(CryptoError, match="did not finish encrypting within 1 s"):
        ring.encrypt_bytes(b"x" * 4_000_000, [keys["alice"].fingerprint], out)
    assert not out.exists() and not _running(int(pidfile.read_text()))
