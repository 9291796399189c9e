"""`formrelay backup`: taken while submissions are being written, it restores to a
consistent database that holds only ciphertext and metadata."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from formrelay.cli import cli
from formrelay.config import load_config
from formrelay.ops.audit import verify
from formrelay.services import build
from formrelay.store import Store

from .conftest import ENV, canary, make_config_dict, valid_answers, write_config
from .keys import TestKey, gpg_decrypt

pytestmark = pytest.mark.sqlite_only  # the SQLite file (PostgreSQL: pg_dump, test_postgres.py)

BACKUPS_WHILE_WRITING = 3
MAX_SUBMISSIONS = 300


def _config(tmp_path: Path, keys: dict[str, TestKey], data: Path) -> Path:
    return write_config(tmp_path / f"{data.name}.toml", make_config_dict(data, keys))


def _backup(config: Path, dest: Path | str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "backup", str(dest)], env=ENV)


def _consistent(path: Path, marks: list[str]) -> int:
    """The backup is a database on its own whose every submission is whole, audited in
    the same transaction, and whose audit chain verifies; returns its submission count."""
    raw = path.read_bytes()
    assert raw.startswith(b"SQLite format 3\x00")
    assert not Path(f"{path}-wal").exists()
    for mark in marks:
        assert mark.encode() not in raw  # ciphertext and metadata only
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT reference, size, ciphertext FROM submissions").fetchall()
        for ref, size, ct in rows:
            assert len(ct) == size, ref
            assert ct.startswith(b"-----BEGIN PGP MESSAGE-----")
            assert ct.rstrip().endswith(b"-----END PGP MESSAGE-----"), ref
        received = {r[0] for r in conn.execute(
            "SELECT reference FROM audit WHERE action = 'received' AND outcome = 'ok'")}
        assert received == {r[0] for r in rows}
    finally:
        conn.close()
    copy = path.with_name(path.name + ".verify")
    shutil.copy(path, copy)
    store = Store(copy)
    try:
        result = verify(store)
        assert result.ok, result.problems
    finally:
        store.close()
    return len(rows)


def test_backup_while_writing_restores_consistent(tmp_path: Path,
                                                  keys: dict[str, TestKey]) -> None:
    config = _config(tmp_path, keys, tmp_path / "data")
    relay = build(load_config(config, ENV)).relay
    relay.sync_keys()
    marks: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            while not stop.is_set() and len(marks) < MAX_SUBMISSIONS:
                mark = canary()
                marks.append(mark)
                relay.submit("intake", "nl",
                             {k: [v] for k, v in valid_answers(mark).items()})
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            relay.store.close()

    writer = threading.Thread(target=write)
    writer.start()
    counts: list[int] = []
    try:
        while len(counts) < BACKUPS_WHILE_WRITING and writer.is_alive():
            r = _backup(config, tmp_path / "backups" / f"b{len(counts)}.db")
            assert r.exit_code == 0, r.output
            n = _consistent(tmp_path / "backups" / f"b{len(counts)}.db", marks)
            if n > (counts[-1] if counts else 0):
                counts.append(n)
            else:
                (tmp_path / "backups" / f"b{len(counts)}.db").unlink()
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
    assert len(counts) == BACKUPS_WHILE_WRITING, "the writer finished before the backups"
    assert counts[-1] < len(marks)  # the last backup was taken mid-stream

    # Restore as deploy/README.md says: the backup becomes formrelay.db of a data folder.
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    shutil.copy(tmp_path / "backups" / f"b{len(counts) - 1}.db", restored / "formrelay.db")
    config2 = _config(tmp_path, keys, restored)
    r = CliRunner().invoke(cli, ["--config", str(config2), "check", "--offline"], env=ENV)
    assert r.exit_code == 0, r.output
    store = Store(restored / "formrelay.db")
    subs = store.submissions.rows()
    assert len(subs) == counts[-1]
    plain = gpg_decrypt(keys["alice"], store.submissions.ciphertext(subs[0]["reference"]))
    assert any(m.encode() in plain for m in marks)
    store.close()


def test_backup_into_a_folder_names_a_dated_private_file(tmp_path: Path,
                                                         keys: dict[str, TestKey]) -> None:
    config = _config(tmp_path, keys, tmp_path / "data")
    build(load_config(config, ENV)).close()
    r = _backup(config, f"{tmp_path / 'nightly'}/")
    assert r.exit_code == 0, r.output
    [made] = (tmp_path / "nightly").iterdir()
    assert made.name.startswith("formrelay-") and made.suffix == ".db"
    assert made.stat().st_mode & 0o777 == 0o600
    assert f"backup {made}:" in r.output and "0 submissions" in r.output


def test_backup_refuses_bad_destinations(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    config = _config(tmp_path, keys, tmp_path / "data")
    r = _backup(config, tmp_path / "b.db")
    assert r.exit_code == 1 and "no database at" in r.output  # nothing to back up yet
    build(load_config(config, ENV)).close()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = _backup(config, blocker / "b.db")
    assert r.exit_code == 1 and r.output.startswith("Error: backup failed:")
    r = _backup(config, tmp_path / "data" / "formrelay.db")
    assert r.exit_code == 1 and "is the live database" in r.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
