"""Refused anonymous attempts (bad API tokens, logins under unknown names) are counted
per address and minute, not written to the audit log one by one: a flood from one
address adds a bounded number of audit rows, none once the address is paused, the
counters go with the retention purge, and the audit chain still verifies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask

from formrelay import services
from formrelay.ops import retention
from formrelay.store import REFUSALS_KEPT_DAYS

from .area import Browser, Clock, audit, cheap_hashing, cli_run

API = "/clinician/api/submissions"
ATTACKER = "198.51.100.66"


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


def bad_tokens(app: Flask, n: int) -> list[int]:
    api = app.test_client()
    return [api.get(API, headers={"Authorization": f"Bearer fr_guess{i}"},
                    base_url="https://localhost",
                    environ_base={"REMOTE_ADDR": ATTACKER}).status_code for i in range(n)]


def rows_from(app: Flask, ip: str) -> list[dict[str, object]]:
    return [r for r in app.extensions["formrelay"].store.audit.rows() if r["ip"] == ip]


def test_a_flood_of_bad_api_tokens_writes_a_bounded_audit_trail(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)  # login_max_failures_ip = 20
    store = app.extensions["formrelay"].store
    statuses = bad_tokens(app, 300)
    assert statuses == [401] * 20 + [429] * 280  # paused after 20
    written = rows_from(app, ATTACKER)
    assert [(r["action"], r["outcome"], r["actor"]) for r in written] == [
        ("api access", "failed", "unknown")]  # the first of the minute; the rest counted
    assert "more from this address in this minute are counted" in str(written[0]["detail"])
    assert [(c["ip"], c["what"], c["count"]) for c in store.refusals.counts()] == [
        (ATTACKER, "api token", 20)]
    # paused: more of them, a minute later, write nothing at all
    clock.advance(minutes=1)
    assert set(bad_tokens(app, 100)) == {429}
    assert len(rows_from(app, ATTACKER)) == 1 and len(store.refusals.counts()) == 1

    # the pause over, the next burst: again one row, however long it lasts
    clock.advance(minutes=15)
    assert bad_tokens(app, 50) == [401] * 20 + [429] * 30
    assert len(rows_from(app, ATTACKER)) == 2
    assert cli_run(tmp_path, "audit", "verify").exit_code == 0

    # the counters are kept within retention: the purge removes them
    built = app.extensions["formrelay"]
    report = retention.purge(built.settings, store, clock.now + timedelta(days=1),
                             purgers=services.purgers())
    assert report.refusals == 0 and len(store.refusals.counts()) == 2
    later = clock.now + timedelta(days=REFUSALS_KEPT_DAYS, minutes=1)
    report = retention.purge(built.settings, store, later, purgers=services.purgers())
    assert report.refusals == 2 and store.refusals.counts() == []
    assert "refused anonymous attempts counted" in "\n".join(report.lines())
    verified = cli_run(tmp_path, "audit", "verify")
    assert verified.exit_code == 0 and "ok: the audit log is intact" in verified.output


def test_logins_under_unknown_names_are_counted_not_logged_one_by_one(
        make_app: Callable[..., Flask]) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    attacker = Browser(app, ip=ATTACKER)
    codes = [attacker.password(f"niemand{i}", "geraden wachtwoord").status_code
             for i in range(60)]
    assert codes == [401] * 20 + [429] * 40
    written = rows_from(app, ATTACKER)
    assert len(written) == 1 and str(written[0]["detail"]).startswith("unknown user (name tag ")
    assert "niemand" not in str(written) and "geraden" not in str(written)
    assert [c["count"] for c in app.extensions["formrelay"].store.refusals.counts()] == [20]
    # someone else, from another address, is audited as before
    assert Browser(app, ip="192.0.2.5").password("niemand", "x").status_code == 401
    assert len(audit(app, "login", "failed")) == 2
