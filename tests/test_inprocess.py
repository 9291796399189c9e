"""In-process encryption (crypto/inprocess.py): only keys gpg just passed, SEIPD v1 that
gpg and rnp read, and fail closed the moment gpg (or the key's expiry) says no."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pysequoia
import pytest
from flask import Flask

from formrelay.crypto.inprocess import InProcess
from formrelay.crypto.packets import encryption_packet

from .conftest import post_form, valid_answers
from .helpers.submit import answers_json, inner
from .keys import TestKey, _gpg, gpg_decrypt, make_key, packet_tags, rnp_decrypt

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def _stored(app: Flask, reference: str) -> bytes:
    return bytes(app.extensions["formrelay"].store.submissions.ciphertext(reference))


def _count(app: Flask) -> int:
    return len(app.extensions["formrelay"].store.submissions.rows())


def _refused(app: Flask, mark: str) -> None:
    """A post now gets the fail-closed answer and nothing is stored."""
    before = _count(app)
    r = post_form(app.test_client(), valid_answers(mark), json_answer=True)
    assert r.status_code == 503 and "020 555 0101" in r.get_json()["error"]
    assert _count(app) == before


def test_post_without_files_is_encrypted_in_process(app: Flask,
                                                    keys: dict[str, TestKey]) -> None:
    relay = app.extensions["formrelay"].relay
    assert relay.engine.fingerprints() == {keys["alice"].fingerprint}
    relay.keyring.gpg.gpgbinary = "/bin/false"  # no gpg run is needed for this post
    r = post_form(app.test_client(), valid_answers("in-process"), json_answer=True)
    assert r.status_code == 200, r.get_data(as_text=True)
    ct = _stored(app, r.get_json()["reference"])
    assert ct.startswith(b"-----BEGIN PGP MESSAGE-----")
    assert encryption_packet(ct) == "SEIPD v1"
    tags = packet_tags(keys["alice"], ct)
    assert any("mdc_method: 2" in t for t in tags)
    assert not any("compressed packet" in t for t in tags)  # Sequoia's: gpg's compresses
    for decrypt in (gpg_decrypt, rnp_decrypt):
        answers = answers_json(inner(decrypt(keys["alice"], ct)))["answers"]
        assert answers["complaint"] == "Pijn in de knie 🦵 in-process"


def test_post_with_a_file_stays_on_gpg(app: Flask, keys: dict[str, TestKey]) -> None:
    pdf = (io.BytesIO(b"%PDF-1.4 verwijzing"), "verwijzing.pdf")
    r = post_form(app.test_client(), {**valid_answers(), "attachment": pdf}, json_answer=True)
    assert r.status_code == 200
    ct = _stored(app, r.get_json()["reference"])
    assert encryption_packet(ct) == "SEIPD v1"
    for decrypt in (gpg_decrypt, rnp_decrypt):
        pdf_part = next(p for p in inner(decrypt(keys["alice"], ct)).walk()
                        if p.get_content_type() == "application/pdf")
        assert pdf_part.get_payload(decode=True) == b"%PDF-1.4 verwijzing"
    app.extensions["formrelay"].relay.keyring.gpg.gpgbinary = "/bin/false"
    r = post_form(app.test_client(), {**valid_answers("met-bestand"),
                                      "attachment": (io.BytesIO(b"%PDF-1.4 x"), "x.pdf")},
                  json_answer=True)
    assert r.status_code == 503  # gpg broken: a post with a file is refused, not stored


def test_expired_key_fails_closed_before_any_recheck(make_app: Callable[..., Flask],
                                                     keys: dict[str, TestKey]) -> None:
    now = [datetime.now(UTC)]
    app = make_app(recipients=("soon",), clock=lambda: now[0])
    ok = post_form(app.test_client(), valid_answers(), json_answer=True)
    assert ok.status_code == 200
    now[0] += timedelta(days=11)  # past the key's expiry; gpg's own clock is not
    _refused(app, "na-verloop")
    assert app.extensions["formrelay"].relay.engine.fingerprints() == set()


@pytest.fixture
def own_key(tmp_path: Path) -> tuple[TestKey, Path]:
    """A key of this test only (it gets revoked), and the key file the config names."""
    key = make_key(tmp_path / "own", "carol")
    path = tmp_path / "carol.asc"
    path.write_bytes(key.public.read_bytes())
    return key, path


def _carol_app(tmp_path: Path, keys: dict[str, TestKey], key: TestKey, path: Path) -> Flask:
    from formrelay import create_app

    from .conftest import ENV, make_config_dict, write_config
    carol = TestKey("carol", key.fingerprint, path, key.secret, key.home)
    cfg = make_config_dict(tmp_path / "data", {**keys, "carol": carol}, recipients=("carol",))
    app = create_app(write_config(tmp_path / "config.toml", cfg), environ=ENV)
    app.testing = True
    ok = post_form(app.test_client(), valid_answers(), json_answer=True)
    assert ok.status_code == 200
    assert app.extensions["formrelay"].relay.engine.fingerprints() == {key.fingerprint}
    return app


def test_revoked_key_is_dropped_when_its_file_is_imported(
        tmp_path: Path, keys: dict[str, TestKey], own_key: tuple[TestKey, Path]) -> None:
    key, path = own_key
    app = _carol_app(tmp_path, keys, key, path)
    rev = (key.home / "openpgp-revocs.d" / f"{key.fingerprint}.rev").read_text()
    _gpg(key.home, "--import", stdin=rev.replace(":-----BEGIN", "-----BEGIN").encode())
    path.write_bytes(_gpg(key.home, "--armor", "--export", key.fingerprint))
    relay = app.extensions["formrelay"].relay
    assert not relay.sync_keys()["carol"].usable  # as `formrelay keys import` or a reload
    assert relay.engine.fingerprints() == set()
    _refused(app, "na-intrekking")


def test_replaced_key_file_is_dropped(tmp_path: Path, keys: dict[str, TestKey],
                                      own_key: tuple[TestKey, Path]) -> None:
    key, path = own_key
    app = _carol_app(tmp_path, keys, key, path)
    path.write_bytes(keys["bob"].public.read_bytes())  # another key than the pinned one
    relay = app.extensions["formrelay"].relay
    assert "fingerprint mismatch" in relay.sync_keys()["carol"].problem
    assert relay.engine.fingerprints() == set()
    _refused(app, "na-vervanging")


def test_recheck_that_refuses_drops_the_key(tmp_path: Path, keys: dict[str, TestKey],
                                            own_key: tuple[TestKey, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from formrelay.intake import relay as relay_module

    key, path = own_key
    app = _carol_app(tmp_path, keys, key, path)
    relay = app.extensions["formrelay"].relay
    relay.keyring.gpg.delete_keys(key.fingerprint)  # gone from gpg's keyring
    monkeypatch.setattr(relay_module, "KEY_RECHECK_SECONDS", 0)  # as if a minute passed
    _refused(app, "na-controle")
    assert relay.engine.fingerprints() == set()


def test_engine_holds_only_what_gpg_passed(keys: dict[str, TestKey]) -> None:
    engine = InProcess()
    alice, bob = keys["alice"], keys["bob"]
    both = alice.public.read_bytes() + bob.public.read_bytes()
    engine.admit(both, {alice.fingerprint: None})  # bob is in the export but not passed
    assert engine.fingerprints() == {alice.fingerprint}
    assert engine.encrypt(b"x", [alice.fingerprint, bob.fingerprint], datetime.now(UTC)) is None
    assert engine.encrypt(b"x" * (300 * 1024), [alice.fingerprint], datetime.now(UTC)) is None
    engine.admit(b"not a key", {alice.fingerprint: None})
    assert engine.fingerprints() == set()


def test_a_key_asking_for_seipd_v2_goes_to_gpg(logs: pytest.LogCaptureFixture) -> None:
    """Sequoia writes SEIPD v2 for a key that advertises it; GnuPG 2.x cannot read that,
    so the engine does not hand it out (the relay then encrypts with gpg)."""
    cert = pysequoia.Tsk.generate("v2 <v2@praktijk.test>").extract_certificate()
    fpr = str(cert.fingerprint).upper()
    engine = InProcess()
    engine.admit(bytes(cert), {fpr: None})
    assert engine.fingerprints() == {fpr}
    assert engine.encrypt(b"answers", [fpr], datetime.now(UTC)) is None
    assert "not SEIPD v1" in logs.text


def test_rust_backtrace_in_the_environment_is_harmless_under_gevent(tmp_path: Path) -> None:
    """With RUST_BACKTRACE set, every Sequoia error captured a backtrace, which crashed a
    gevent worker; importing the engine switches that off. Many errors in greenlets."""
    script = tmp_path / "greenlets.py"
    script.write_text(
        "from gevent import monkey\nmonkey.patch_all()\n"
        "import gevent\nfrom formrelay.crypto import inprocess\n"
        "def errors():\n"
        "    texts = []\n"
        "    for _ in range(30):\n"
        "        try:\n"
        "            inprocess.pysequoia.Cert.from_bytes(b'garbage')\n"
        "        except Exception as exc:\n"
        "            texts.append(str(exc))\n"
        "        gevent.sleep(0)\n"
        "    return texts\n"
        "jobs = [gevent.spawn(errors) for _ in range(8)]\n"
        "gevent.joinall(jobs)\n"
        "texts = [t for j in jobs for t in j.value]\n"
        "print(len(texts), sum('backtrace' in t for t in texts))\n", encoding="utf-8")
    env = {**os.environ, "RUST_BACKTRACE": "full"}
    env.pop("RUST_LIB_BACKTRACE", None)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    assert out.stdout.split() == [b"240", b"0"]

