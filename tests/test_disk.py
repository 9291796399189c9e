"""The data folder's disk: a full disk fails closed and recovers; every file is private.

A real tmpfs of a few MB is the data folder (database, WAL, GnuPG home, temp files); a
filler file makes it full, deleting it gives the space back. No mocks: SQLite, gpg and
the web layer meet the real ENOSPC.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from formrelay.cli import cli
from formrelay.crypto.keyring import Keyring
from formrelay.settings import Recipient
from formrelay.store import Store, StoreNotWritable

from .conftest import ENV, canary, make_config_dict, post_form, valid_answers, write_config
from .keys import TestKey, gpg_decrypt

pytestmark = pytest.mark.sqlite_only  # the SQLite file's disk and modes (PostgreSQL: no files)

PHONE = "020 555 0101"
UNAVAILABLE_NL = "Dit formulier is tijdelijk niet beschikbaar. Bel de praktijk op 020 555 0101."


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/data as its own 16 MB tmpfs (umounted afterwards)."""
    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                              str(data)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("a full disk needs a small tmpfs as data folder, and mounting one is not "
                    f"permitted here (run as root): {mounted.stderr.strip()}")
    try:
        yield data
    finally:
        if subprocess.run(["umount", str(data)], capture_output=True,
                          check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(data)], check=True)  # sqlite/gpg still open


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the disk under `folder` with a filler file; then give back `leave` bytes."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    try:
        while True:  # the last few pages too
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    if leave:
        os.ftruncate(fd, os.fstat(fd).st_size - leave)
    os.close(fd)
    return filler


def stored(app: Flask) -> dict[str, bytes]:
    store: Store = app.extensions["formrelay"].store
    return {row["reference"]: store.submissions.ciphertext(row["reference"])
            for row in store.submissions.rows()}


def test_full_disk_answers_503_call_the_practice_and_recovers(
        small_disk: Path, make_app: Callable[..., Flask], keys: dict[str, TestKey],
        logs: pytest.LogCaptureFixture) -> None:
    app = make_app()
    client = app.test_client()
    first = post_form(client, valid_answers(), json_answer=True)
    assert first.status_code == 200, first.get_data(as_text=True)
    before = stored(app)
    filler = fill(small_disk)

    mark = canary()
    page = post_form(client, valid_answers(mark))
    text = page.get_data(as_text=True)
    assert page.status_code == 503, text
    assert UNAVAILABLE_NL in text and "FR-" not in text
    answer = post_form(client, valid_answers(mark), json_answer=True)
    assert answer.status_code == 503
    assert answer.get_json() == {"ok": False, "errors": {}, "error": UNAVAILABLE_NL}
    health = client.get("/healthz")
    assert health.status_code == 503 and health.is_json
    assert health.get_json()["checks"]["database"] == "error"
    assert "database not writable" in health.get_json()["problems"]
    # the operator's log says why, without the patient's answers
    told = [r.getMessage() for r in logs.records if r.levelname == "ERROR"]
    assert any("disk full" in m and "nothing stored" in m for m in told), told
    assert mark not in logs.text
    assert stored(app) == before  # nothing half-written, nothing lost

    filler.unlink()
    again = post_form(client, valid_answers(mark), json_answer=True)
    assert again.status_code == 200, again.get_data(as_text=True)
    assert client.get("/healthz").status_code == 200
    now = stored(app)
    assert set(now) == set(before) | {again.get_json()["reference"]}
    assert all(now[ref] == before[ref] for ref in before)
    assert mark in gpg_decrypt(keys["alice"], now[again.get_json()["reference"]]).decode()


def test_ciphertext_cut_short_by_a_full_disk_is_never_stored(
        small_disk: Path, make_app: Callable[..., Flask], keys: dict[str, TestKey]) -> None:
    """gpg says "encryption ok" even when the disk filled while it wrote; the patient
    must not be told "received" for a ciphertext cut short."""
    app = make_app()
    client = app.test_client()
    assert post_form(client, valid_answers(), json_answer=True).status_code == 200
    fill(small_disk, leave=96 * 1024)
    upload = secrets.token_hex(150 * 1024).encode()  # 300 KB, compresses badly in gpg
    r = post_form(client, {**valid_answers(), "attachment": (upload, "notes.txt", "text/plain")},
                  json_answer=True)
    assert r.status_code == 503, r.get_data(as_text=True)
    assert r.get_json()["ok"] is False and PHONE in r.get_json()["error"]
    for ref, ciphertext in stored(app).items():  # whatever is stored decrypts whole
        assert gpg_decrypt(keys["alice"], ciphertext), ref
    assert len(stored(app)) == 1


def test_gpg_output_cut_short_by_a_full_disk_is_an_error(small_disk: Path,
                                                          keys: dict[str, TestKey]) -> None:
    keyring = Keyring(small_disk / "gnupg")
    keyring.import_recipient(Recipient(id="alice", email="alice@praktijk.test", key_file="",
                                       fingerprint=keys["alice"].fingerprint),
                             keys["alice"].public)
    fill(small_disk, leave=40 * 1024)
    out = small_disk / "tmp.asc"
    with pytest.raises(OSError) as refused:
        keyring.encrypt_bytes(secrets.token_bytes(200 * 1024), [keys["alice"].fingerprint], out)
    assert refused.value.errno == errno.ENOSPC
    assert not out.exists()  # no truncated ciphertext left to be stored


def test_full_disk_refuses_the_rate_limit_counter_with_503(
        small_disk: Path, make_app: Callable[..., Flask]) -> None:
    """The first write of a post is its rate-limit counter (intake/ratelimit.py). With the
    write-ahead log emptied, that write needs new space on the full disk."""
    app = make_app()
    client = app.test_client()
    assert post_form(client, valid_answers(), json_answer=True).status_code == 200
    store: Store = app.extensions["formrelay"].store
    store.truncate_wal()
    filler = fill(small_disk)
    with pytest.raises(StoreNotWritable, match="disk full"):
        app.extensions["formrelay.protect"].storage.incr("fr/ip/test", 60)
    r = post_form(client, valid_answers(), json_answer=True)
    assert r.status_code == 503 and r.get_json()["error"] == UNAVAILABLE_NL
    filler.unlink()
    assert post_form(client, valid_answers(), json_answer=True).status_code == 200
    assert len(stored(app)) == 2


def test_write_refused_at_commit_is_rolled_back_not_left_open(small_disk: Path) -> None:
    """A write the full disk refused at COMMIT is gone: it is not committed later by the
    next write (which would join a transaction left open), and the error is typed."""
    store = Store(small_disk / "formrelay.db")
    store.audit.append("login", actor="user:anna", ip="192.0.2.1")
    store.truncate_wal()
    filler = fill(small_disk)
    with pytest.raises(StoreNotWritable, match="disk full"):
        store.audit.append("login", "failed", actor="user:refused", ip="192.0.2.9",
                           detail="x" * 8000)
    filler.unlink()
    store.audit.append("logout", actor="user:anna", ip="192.0.2.1")
    assert [(e["action"], e["actor"]) for e in store.audit.iter()] == [
        ("login", "user:anna"), ("logout", "user:anna")]
    store.close()


# -- file modes ------------------------------------------------------------------------
def modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.lstat().st_mode)
            for p in folder.rglob("*")}


def test_data_files_are_private_whatever_the_umask(make_app: Callable[..., Flask],
                                                   tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        app = make_app()
        client = app.test_client()
        assert post_form(client, valid_answers(), json_answer=True).status_code == 200
        made = modes(tmp_path / "data")
    finally:
        os.umask(old)
    for name in ("formrelay.db", "formrelay.db-wal", "formrelay.db-shm", "formrelay.db.lock",
                 "gnupg/pubring.kbx", "gnupg/trustdb.gpg", "gnupg", "tmp"):
        assert name in made, made
    wrong = {name: f"{mode:o}" for name, mode in made.items()
             if mode != (0o700 if (tmp_path / "data" / name).is_dir() else 0o600)}
    assert wrong == {}
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_store_makes_existing_readable_files_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "formrelay.db"
    # kept open: the WAL files stay until the last connection closes (not when the
    # garbage collector happens to run)
    first = Store(path)
    first.audit.append("login", actor="user:anna", ip="192.0.2.1")
    for name in ("formrelay.db", "formrelay.db-wal", "formrelay.db-shm"):
        os.chmod(tmp_path / "data" / name, 0o644)
    Store(path).close()
    assert {n: f"{m:o}" for n, m in modes(tmp_path / "data").items()} == {
        "formrelay.db": "600", "formrelay.db-wal": "600", "formrelay.db-shm": "600",
        "formrelay.db.lock": "600"}
    first.close()


def test_check_warns_about_files_others_can_read(tmp_path: Path,
                                                 keys: dict[str, TestKey]) -> None:
    config = write_config(tmp_path / "config.toml", make_config_dict(tmp_path / "data", keys))
    runner = CliRunner()
    first = runner.invoke(cli, ["--config", str(config), "check"], env=ENV)
    assert first.exit_code == 0, first.output
    db = tmp_path / "data" / "formrelay.db"
    pubring = tmp_path / "data" / "gnupg" / "pubring.kbx"
    os.chmod(db, 0o644)
    os.chmod(pubring, 0o640)
    os.chmod(tmp_path / "data" / "gnupg", 0o755)  # noqa: S103 - the mistake check must see
    r = runner.invoke(cli, ["--config", str(config), "check"], env=ENV)
    assert r.exit_code == 1, r.output
    out = r.output.splitlines()
    assert f"warn  file {db} can be read by other users (mode 644); run `chmod 600 {db}`" in out
    assert f"warn  file {pubring} can be read by other users (mode 640); run " \
           f"`chmod 600 {pubring}`" in out
    assert any(ln.startswith(f"warn  folder {tmp_path / 'data' / 'gnupg'} ") and "chmod 700"
               in ln for ln in out), r.output
