"""`formrelay check`, the operator's pre-flight, and /healthz, which serves the same
essentials: each trouble an operator must hear about gives its own line and exit code."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from formrelay import create_app
from formrelay.cli import cli
from formrelay.config import ConfigError
from formrelay.crypto.packets import PacketError, encryption_packet
from formrelay.localtime import utcnow
from formrelay.store import Store

from .conftest import (
    ENV,
    HEALTH_AUTH,
    HEALTH_TOKEN,
    SECRET,
    make_config_dict,
    open_store,
    write_config,
)
from .keys import TestKey
from .smtpd import TlsFiles, smtp_config, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def run_check(tmp_path: Path, keys: dict[str, TestKey], *args: str, **cfg: Any) -> Result:
    data = cfg.pop("data_dir", tmp_path / "data")
    path = write_config(tmp_path / "config.toml", make_config_dict(data, keys, **cfg))
    return CliRunner().invoke(cli, ["--config", str(path), "check", *args], env=ENV)


def lines(result: Result) -> list[str]:
    return result.output.splitlines()


def line_with(result: Result, text: str) -> str:
    """The first line whose message (after the level column) holds `text`."""
    found = [ln for ln in lines(result) if text in ln[6:]]
    assert found, f"no line with {text!r} in:\n{result.output}"
    return found[0]


def test_healthy_setup_is_all_ok(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    r = run_check(tmp_path, keys, recipients=("alice", "bob"))
    assert r.exit_code == 0, r.output
    assert all(ln.startswith("ok") for ln in lines(r)), r.output
    assert lines(r)[-1] == "ok"
    # every essential has its line
    for text in ("config ", "data folder ", "database ", "key alice ", "key bob ",
                 "form intake (hold)", "writes SEIPD v1", "outbox empty", "clock ",
                 "audit log intact"):
        line_with(r, text)
    # the SEIPD proof names every key it encrypted a probe to
    assert "alice, bob" in line_with(r, "SEIPD v1")


def test_expired_key_is_an_error(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    r = run_check(tmp_path, keys, recipients=("expired",))
    assert r.exit_code == 2, r.output
    line = line_with(r, "key expired")
    assert line.startswith("error key expired ")
    assert "ask the clinician for a renewed key and run `formrelay keys import expired`" in line
    assert line_with(r, "form intake").startswith("error form intake is unavailable")
    assert lines(r)[-1] == "errors"


def test_key_expiring_soon_is_a_warning(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    r = run_check(tmp_path, keys, recipients=("soon",))
    assert r.exit_code == 1, r.output
    assert line_with(r, "key soon").startswith("warn  key soon ")
    assert "expires in" in line_with(r, "key soon")
    assert lines(r)[-1] == "warnings"


def test_relay_without_starttls_is_an_error(tmp_path: Path, keys: dict[str, TestKey],
                                             tls: TlsFiles) -> None:
    with smtp_server(tls, mode="plain") as (handler, port):
        r = run_check(tmp_path, keys, smtp=smtp_config(tls, port), delivery="email")
    assert r.exit_code == 2, r.output
    line = line_with(r, "smtp:")
    assert line.startswith("error smtp: relay does not offer STARTTLS")
    assert "nothing is sent in clear" in line and "port 465" in line
    assert "MAIL" not in handler.commands  # the probe never starts a mail in clear


def test_relay_with_untrusted_certificate_is_an_error(tmp_path: Path, keys: dict[str, TestKey],
                                                      tls: TlsFiles) -> None:
    with smtp_server(tls, trusted=False) as (_, port):
        r = run_check(tmp_path, keys, smtp=smtp_config(tls, port), delivery="email")
    assert r.exit_code == 2, r.output
    assert line_with(r, "smtp:").startswith("error smtp: relay certificate not trusted")


def test_relay_with_tls_is_ok_and_offline_skips_it(tmp_path: Path, keys: dict[str, TestKey],
                                                   tls: TlsFiles) -> None:
    with smtp_server(tls) as (handler, port):
        r = run_check(tmp_path, keys, smtp=smtp_config(tls, port), delivery="email")
        assert r.exit_code == 0, r.output
        assert "certificate verified" in line_with(r, "smtp:")
        assert not handler.messages
    r = run_check(tmp_path, keys, "--offline", smtp=smtp_config(tls, port), delivery="email")
    assert r.exit_code == 0, r.output
    assert "smtp" not in r.output


def test_unwritable_data_folder_is_an_error(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    # Tests run as root, for whom every mode is writable: a folder under a plain file
    # cannot be made by anyone.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    r = run_check(tmp_path, keys, data_dir=blocker / "data")
    assert r.exit_code == 2, r.output
    line = line_with(r, "data folder")
    assert line.startswith(f"error data folder {blocker / 'data'} cannot be created")
    assert "install -d -m 700 -o formrelay" in line
    assert lines(r)[-1] == "errors"
    assert not (tmp_path / "data").exists()


def test_data_folder_readable_by_others_is_a_warning(tmp_path: Path,
                                                     keys: dict[str, TestKey]) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    r = run_check(tmp_path, keys)
    assert r.exit_code == 1, r.output
    assert line_with(r, "data folder").startswith("warn  data folder")
    assert f"chmod 700 {data}" in line_with(r, "data folder")


def _queue_mail(data: Path, age: timedelta) -> None:
    then = utcnow() - age
    store = open_store(data / "formrelay.db", clock=lambda: then)
    store.outbox.enqueue("submission", "FR-AAAA-BBBB", ["alice@praktijk.test"], form_id="intake")
    store.close()


@pytest.mark.parametrize(("age", "code", "level"), [
    (timedelta(minutes=5), 0, "ok"),
    (timedelta(minutes=45), 1, "warn"),
    (timedelta(hours=6), 2, "error"),
])
def test_old_outbox_message(tmp_path: Path, keys: dict[str, TestKey], age: timedelta,
                            code: int, level: str) -> None:
    _queue_mail(tmp_path / "data", age)
    r = run_check(tmp_path, keys)
    assert r.exit_code == code, r.output
    line = line_with(r, "outbox:")
    assert line.startswith(f"{level:<5} outbox: 1 mail(s) waiting, the oldest since")
    if code:
        assert "is `formrelay worker` running" in line


def test_clock_behind_the_database_is_an_error(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    future = utcnow() + timedelta(days=3, hours=1)
    store = open_store(tmp_path / "data" / "formrelay.db", clock=lambda: future)
    store.audit.append("received", actor="patient", reference="FR-AAAA-BBBB", form_id="intake")
    store.close()
    r = run_check(tmp_path, keys)
    assert r.exit_code == 2, r.output
    line = line_with(r, "clock ")
    assert line.startswith("error clock is 3 days behind the newest database entry")
    assert "timedatectl set-ntp true" in line


def test_config_error_is_exit_2_for_monitoring(tmp_path: Path,
                                               keys: dict[str, TestKey]) -> None:
    cfg = make_config_dict(tmp_path / "data", keys)
    cfg["server"]["colour"] = "blue"
    path = write_config(tmp_path / "config.toml", cfg)
    r = CliRunner().invoke(cli, ["--config", str(path), "check"], env=ENV)
    assert r.exit_code == 2
    assert lines(r)[0].startswith("error ") and "server.colour: unknown setting" in lines(r)[0]


def test_production_config_without_https_is_an_error(tmp_path: Path,
                                                     keys: dict[str, TestKey]) -> None:
    r = run_check(tmp_path, keys, server={"base_url": "http://forms.praktijk.nl"})
    assert r.exit_code == 2, r.output
    assert line_with(r, "base_url").startswith("error server.base_url http://forms.praktijk.nl "
                                               "is not https")
    r = run_check(tmp_path, keys, server={"base_url": "https://forms.praktijk.nl"})
    assert r.exit_code == 1, r.output
    assert line_with(r, "trusted_proxies").startswith("warn  server.trusted_proxies is 0")


def test_healthz_reports_the_same_essentials_without_secrets(tmp_path: Path,
                                                             keys: dict[str, TestKey]) -> None:
    _queue_mail(tmp_path / "data", timedelta(hours=6))
    cfg = make_config_dict(tmp_path / "data", keys, recipients=("alice", "soon"))
    app = create_app(write_config(tmp_path / "config.toml", cfg), environ=ENV)
    public = app.test_client().get("/healthz")
    assert public.status_code == 503
    assert public.get_json() == {
        "ok": False, "status": "error", "problems": ["mail delivery stuck"],
        "checks": {"data_folder": "ok", "database": "ok", "encryption": "ok", "outbox": "error",
                   "clock": "ok", "audit": "ok", "keys": "warn"}}
    # the operator's token shows the details
    r = app.test_client().get("/healthz", headers=HEALTH_AUTH)
    assert r.status_code == 503
    body = r.get_json()
    assert body["ok"] is False and body["status"] == "error"
    checks = body["checks"]
    assert checks["outbox"]["level"] == "error" and checks["outbox"]["queued"] == 1
    assert checks["outbox"]["oldest_age_seconds"] >= 6 * 3600
    assert checks["keys"]["alice"]["level"] == "ok"
    assert checks["keys"]["soon"]["level"] == "warn" and checks["keys"]["soon"]["expires"]
    assert checks["encryption"] == {"level": "ok", "gnupg": checks["encryption"]["gnupg"],
                                    "packet": "SEIPD v1", "recipients": ["alice", "soon"]}
    assert checks["database"]["writable"] and checks["data_folder"]["writable"]
    assert checks["clock"]["ok"] is True
    text = json.dumps(body)
    for secret in (ENV["FORMRELAY_SECRET_KEY"], str(tmp_path)):
        assert secret not in text


def test_public_healthz_shows_no_path_fingerprint_or_address(tmp_path: Path,
                                                             keys: dict[str, TestKey]) -> None:
    """Anyone can call /healthz: a missing key file makes it 503, but the file's path,
    the fingerprint and the clinician's address are for the operator's token only."""
    cfg = make_config_dict(tmp_path / "data", keys)
    gone = tmp_path / "keys-folder" / "dr-alice-gone.asc"
    cfg["recipients"]["alice"]["key_file"] = str(gone)
    app = create_app(write_config(tmp_path / "config.toml", cfg), environ=ENV)
    client = app.test_client()
    public = client.get("/healthz")
    assert public.status_code == 503
    assert public.get_json()["checks"]["keys"] == "error"
    assert public.get_json()["problems"] == ["a recipient key is unusable"]
    text = public.get_data(as_text=True)
    for detail in (str(tmp_path), "dr-alice-gone", keys["alice"].fingerprint, "@", "alice",
                   "not found", "expires"):
        assert detail not in text
    for wrong in ("Bearer not-the-token", f"Basic {HEALTH_TOKEN}", f"Bearer {HEALTH_TOKEN}x",
                  "Bearer "):
        refused = client.get("/healthz", headers={"Authorization": wrong})
        assert (refused.status_code, refused.get_data(as_text=True)) == (503, text)
    detailed = client.get("/healthz", headers=HEALTH_AUTH)
    assert detailed.status_code == 503
    problem = detailed.get_json()["checks"]["keys"]["alice"]["problem"]
    assert str(gone) in problem and "not found" in problem
    # without FORMRELAY_HEALTH_TOKEN nobody gets the details
    bare = create_app(tmp_path / "config.toml", environ={"FORMRELAY_SECRET_KEY": SECRET})
    assert bare.test_client().get("/healthz", headers=HEALTH_AUTH).get_data(as_text=True) == text


def test_short_health_token_is_refused_at_start_up(tmp_path: Path,
                                                   keys: dict[str, TestKey]) -> None:
    path = write_config(tmp_path / "config.toml", make_config_dict(tmp_path / "data", keys))
    with pytest.raises(ConfigError, match="FORMRELAY_HEALTH_TOKEN is too short"):
        create_app(path, environ={**ENV, "FORMRELAY_HEALTH_TOKEN": "short"})


def test_healthz_ok_when_only_warnings(make_app: Any) -> None:
    app = make_app(recipients=("soon",))
    r = app.test_client().get("/healthz")
    assert r.status_code == 200
    assert r.get_json()["ok"] is True and r.get_json()["status"] == "warn"


@pytest.mark.sqlite_only  # reads the SQLite file itself
def test_tampered_audit_log_is_an_error_in_check_and_healthz(tmp_path: Path,
                                                             keys: dict[str, TestKey]) -> None:
    store = Store(tmp_path / "data" / "formrelay.db")
    store.audit.append("login", actor="user:u0", ip="192.0.2.1")
    first = run_check(tmp_path, keys)
    assert first.exit_code == 0, first.output
    assert "audit log intact up to #1 (1 row(s) checked)" in first.output
    for i in range(3):
        store.audit.append("login", actor=f"user:u{i}", ip="192.0.2.1")
    again = run_check(tmp_path, keys)  # only what was added since the first check
    assert "#4 (3 row(s) checked since #1" in line_with(again, "audit log intact"), again.output
    con = sqlite3.connect(store.path, isolation_level=None)
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("UPDATE audit SET actor = 'user:someone-else' WHERE action = 'login'")
    con.close()
    broken = run_check(tmp_path, keys)
    assert broken.exit_code == 2, broken.output
    line = line_with(broken, "audit log:")
    assert line.startswith("error audit log: row #") and "formrelay audit verify" in line
    app = create_app(tmp_path / "config.toml", environ=ENV)
    r = app.test_client().get("/healthz")
    assert r.status_code == 503 and r.get_json()["checks"]["audit"] == "error"
    assert r.get_json()["problems"] == ["audit log damaged"]


def test_packet_reader_tells_ocb_and_seipd_v2_apart() -> None:
    pkesk = bytes([0xC1, 3, 3, 0, 0])  # a (dummy) public-key session-key packet
    assert encryption_packet(pkesk + bytes([0xD2, 2, 1, 0])) == "SEIPD v1"
    assert encryption_packet(pkesk + bytes([0xD2, 2, 2, 0])) == "SEIPD v2"
    assert encryption_packet(pkesk + bytes([0xD4, 2, 1, 9])) == "OCB (AEAD, LibrePGP)"
    assert encryption_packet(pkesk + bytes([0xC9, 1, 0])).startswith("SED")
    with pytest.raises(PacketError):
        encryption_packet(b"not a message")
    with pytest.raises(PacketError):
        encryption_packet(pkesk)


# -- check --config-only: what `systemctl reload` runs before SIGHUP ----------------------
def test_config_only_passes_a_good_file_without_touching_the_data_folder(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    r = run_check(tmp_path, keys, "--config-only")
    assert r.exit_code == 0, r.output
    assert lines(r) == [f"ok    config {tmp_path / 'config.toml'}: 1 practice(s), 1 form(s)"]
    assert not (tmp_path / "data").exists()  # no data folder, no database, no keyring


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda text: text + "\n[forms.intake\n", "config.toml"),  # not TOML any more
    (lambda text: text.replace("[server]", "[server]\ncolour = \"red\""),
     "server.colour: unknown setting"),
    (lambda text: text.replace('delivery = "hold"', 'delivery = "pigeon"'),
     "forms.intake.delivery"),
])
def test_config_only_fails_a_broken_file_with_exit_2(
        tmp_path: Path, keys: dict[str, TestKey], breakage: Any, message: str) -> None:
    config = write_config(tmp_path / "config.toml", make_config_dict(tmp_path / "data", keys))
    config.write_text(breakage(config.read_text(encoding="utf-8")), encoding="utf-8")
    r = CliRunner().invoke(cli, ["--config", str(config), "check", "--config-only"], env=ENV)
    assert r.exit_code == 2, r.output
    assert lines(r)[0].startswith("error ") and message in r.output and lines(r)[-1] == "errors"
    assert not (tmp_path / "data").exists()


def test_config_only_fails_a_copy_form_without_pdf_fonts(
        tmp_path: Path, keys: dict[str, TestKey], monkeypatch: pytest.MonkeyPatch) -> None:
    from formrelay.patient_copy import pdf

    def missing() -> Any:
        raise pdf.PdfError("fonts not found")

    monkeypatch.setattr(pdf, "font_files", missing)
    r = run_check(tmp_path, keys, "--config-only", patient_copy=True)
    assert r.exit_code == 2 and "forms.intake.patient_copy: fonts not found" in r.output
    assert not (tmp_path / "data").exists()
