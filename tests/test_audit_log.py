"""The audit log is append-only and tamper-evident: `formrelay audit verify` finds a
changed, inserted or deleted row, also one cut off the end, and still verifies after the
retention purge removed old rows behind its anchor."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from formrelay import services
from formrelay.ops.audit import verify
from formrelay.ops.retention import purge
from formrelay.store import Store, audit_hash

from .area import Clock, cli_run

pytestmark = pytest.mark.sqlite_only  # tampers with the SQLite file; see test_postgres.py


FORGE = ("INSERT INTO audit (id, at, action, outcome, actor, ip, reference, form_id, detail, "
         "prev_hash, hash) VALUES (:id, :at, :action, :outcome, :actor, :ip, :reference, "
         ":form_id, :detail, :prev_hash, :hash)")


def events(store: Store, n: int = 6) -> None:
    for i in range(n):
        store.audit.append("login", "ok" if i % 2 else "failed", actor=f"user:u{i}", ip="192.0.2.1",
                           detail=f"event {i}")


def attacker(store: Store) -> sqlite3.Connection:
    """Someone with the database file: the triggers are no obstacle to them."""
    con = sqlite3.connect(store.path, isolation_level=None)
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("DROP TRIGGER audit_no_delete")
    return con


def row(store: Store, rid: int) -> dict[str, object]:
    return next(r for r in store.audit.rows() if r["id"] == rid)


def change(store: Store) -> None:
    attacker(store).execute("UPDATE audit SET outcome = 'ok' WHERE id = 3")


def change_and_rehash(store: Store) -> None:
    r = {**row(store, 3), "outcome": "ok"}
    attacker(store).execute("UPDATE audit SET outcome = 'ok', hash = ? WHERE id = 3",
                            (audit_hash(str(r["prev_hash"]), r),))


def delete_middle(store: Store) -> None:
    attacker(store).execute("DELETE FROM audit WHERE id = 3")


def delete_tail(store: Store) -> None:
    attacker(store).execute("DELETE FROM audit WHERE id >= 5")


def delete_head(store: Store) -> None:
    attacker(store).execute("DELETE FROM audit WHERE id <= 2")


def insert_forged(store: Store) -> None:
    last = row(store, 6)
    fake = {"id": 7, "at": last["at"], "action": "login", "outcome": "ok", "actor": "user:x",
            "ip": "", "reference": "", "form_id": "", "detail": "", "prev_hash": last["hash"]}
    fake["hash"] = "f" * 64
    attacker(store).execute(FORGE, fake)


def insert_with_gap(store: Store) -> None:
    last = row(store, 6)
    fake = {"id": 9, "at": last["at"], "action": "deleted", "outcome": "ok", "actor": "system",
            "ip": "", "reference": "", "form_id": "", "detail": "", "prev_hash": last["hash"]}
    fake["hash"] = audit_hash(str(last["hash"]), fake)
    attacker(store).execute(FORGE, fake)


@pytest.mark.parametrize(("tamper", "found"), [
    (change, "row #3 was changed"),
    (change_and_rehash, "row #4 does not follow"),
    (delete_middle, "row #3 missing"),
    (delete_tail, "row #5 to #6 missing at the end"),
    (delete_head, "row #1 to #2 missing"),
    (insert_forged, "row #7 was changed"),
    (insert_with_gap, "row #7 to #8 missing"),
])
def test_tampering_is_detected(tmp_path: Path, tamper: Callable[[Store], None],
                               found: str) -> None:
    store = Store(tmp_path / "formrelay.db")
    events(store)
    assert verify(store).ok
    tamper(store)
    problems = verify(store).problems
    assert any(found in p for p in problems), problems


def test_audit_verify_command(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    store = make_app().extensions["formrelay"].store
    events(store)
    ok = cli_run(tmp_path, "audit", "verify")
    assert ok.exit_code == 0 and "ok: the audit log is intact" in ok.output
    change(store)
    result = cli_run(tmp_path, "audit", "verify")
    assert result.exit_code == 2
    assert "PROBLEM row #3 was changed" in result.output and "FAILED" in result.output


def test_the_database_refuses_changes_and_deletions(tmp_path: Path) -> None:
    store = Store(tmp_path / "formrelay.db")
    events(store, 2)
    con = sqlite3.connect(store.path)
    for sql in ("UPDATE audit SET detail = 'x' WHERE id = 1", "DELETE FROM audit WHERE id = 1",
                "UPDATE audit_anchor SET upto_id = 0", "DELETE FROM audit_anchor"):
        if "anchor" in sql:
            con.execute("INSERT INTO audit_anchor (at, upto_id, upto_hash) VALUES ('', 0, '')")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    assert verify(store).ok


def test_retention_purge_keeps_the_chain_verifiable(make_app: Callable[..., Flask],
                                                    tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"audit_retention_years": 5})
    relay = app.extensions["formrelay"]
    store = relay.store
    events(store, 4)
    first_old = len(store.audit.rows())
    clock.advance(days=365 * 5 - 30)
    events(store, 3)
    clock.advance(days=60)  # the first events are now over 5 years old, the others not
    report = purge(relay.settings, store, clock.now, purgers=services.purgers())
    assert report.audit_rows == first_old
    rows = store.audit.rows()
    assert rows[0]["id"] == first_old + 1 and rows[-1]["action"] == "audit purged"
    assert f"up to #{first_old}" in rows[-1]["detail"]
    assert verify(store).ok, verify(store).problems
    # nothing more is due
    assert purge(relay.settings, store, clock.now, purgers=services.purgers()).audit_rows == 0
    # deleting more at the start (behind the anchor's back) is still seen
    attacker(store).execute("DELETE FROM audit WHERE id = ?", (first_old + 1,))
    problems = verify(store).problems
    assert any(f"row #{first_old + 1} missing" in p for p in problems), problems


def test_export_for_an_unknown_reference(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    make_app()
    r = cli_run(tmp_path, "audit", "export", "--reference", "fr-2222-2222")
    assert r.exit_code == 0 and "FR-2222-2222" in r.output and "No events" in r.output
    assert cli_run(tmp_path, "audit", "export").exit_code == 2  # --reference is required


def test_a_log_from_before_the_id_chain_is_upgraded(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from formrelay.store import GENESIS, base
    from formrelay.store.schema import _audit_hash_v1

    early = [m for m in base.MIGRATIONS if m[0] in ("0001_submissions", "0002_audit")]
    monkeypatch.setattr(base, "MIGRATIONS", early)  # where Store.migrate reads them
    old = Store(tmp_path / "formrelay.db")
    prev = GENESIS
    for i in range(3):  # written the way 0002-era code did: no id in the hash
        r = {"at": f"2026-01-0{i + 1}T00:00:00.000000Z", "action": "received", "outcome": "ok",
             "actor": "patient", "ip": "", "reference": "", "form_id": "intake", "detail": ""}
        r["prev_hash"], r["hash"] = prev, _audit_hash_v1(prev, r)
        old.db["audit"].insert(r)
        prev = r["hash"]
    old.close()
    monkeypatch.undo()
    upgraded = Store(tmp_path / "formrelay.db")
    assert verify(upgraded).ok and verify(upgraded).rows == 3
    upgraded.audit.append("login")
    assert verify(upgraded).ok and upgraded.audit.rows()[-1]["id"] == 4


# -- incremental verification (`formrelay check`, /healthz) --------------------------------
def change_new(store: Store) -> None:
    attacker(store).execute("UPDATE audit SET outcome = 'ok' WHERE id = 5")


def change_verified(store: Store) -> None:
    r = {**row(store, 4), "detail": "rewritten"}
    attacker(store).execute("UPDATE audit SET detail = 'rewritten', hash = ? WHERE id = 4",
                            (audit_hash(str(r["prev_hash"]), r),))


def delete_verified(store: Store) -> None:
    attacker(store).execute("DELETE FROM audit WHERE id = 2")


def rewrite_from_verified(store: Store) -> None:
    """Delete from the verified row on and write a consistent new tail."""
    con = attacker(store)
    con.execute("DELETE FROM audit WHERE id >= 4")
    prev = str(row(store, 3)["hash"])
    for rid in (4, 5, 6):
        fake = {"id": rid, "at": "2026-01-01T00:00:00.000000Z", "action": "login",
                "outcome": "ok", "actor": "user:x", "ip": "", "reference": "", "form_id": "",
                "detail": "", "prev_hash": prev}
        fake["hash"] = prev = audit_hash(prev, fake)
        con.execute(FORGE, fake)
    con.execute("UPDATE audit_head SET last_id = 6, last_hash = ?", (prev,))


@pytest.mark.parametrize(("tamper", "found"), [
    (change_new, "row #5 was changed"),
    (change_verified, "row #4, verified on"),
    (delete_verified, "were deleted or inserted since"),
    (rewrite_from_verified, "row #4, verified on"),
    (delete_tail, "row #5 to #6 missing at the end"),
    (insert_forged, "row #7 was changed"),
    (insert_with_gap, "row #7 to #8 missing"),
])
def test_incremental_verification_finds_what_changed_since(
        tmp_path: Path, tamper: Callable[[Store], None], found: str) -> None:
    store = Store(tmp_path / "formrelay.db")
    events(store, 4)
    first = verify(store, incremental=True, record=True)
    assert first.ok and first.rows == 4 and first.since_id == 0
    events(store, 2)
    tamper(store)
    problems = verify(store, incremental=True).problems
    assert any(found in p for p in problems), problems


def test_incremental_verification_reads_only_new_rows_and_survives_the_purge(
        make_app: Callable[..., Flask]) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"audit_retention_years": 5})
    relay = app.extensions["formrelay"]
    store = relay.store
    events(store, 4)
    assert verify(store, incremental=True, record=True).ok
    events(store, 3)
    again = verify(store, incremental=True, record=True)
    head = store.audit.head()[0]
    assert again.ok and again.rows == 3 and again.since_id == head - 3
    assert verify(store, incremental=True, record=True).rows == 0
    clock.advance(days=365 * 5 + 30)  # everything is old now: the purge cuts it all
    events(store, 1)
    assert purge(relay.settings, store, clock.now, purgers=services.purgers()).audit_rows == head
    after = verify(store, incremental=True, record=True)
    assert after.ok, after.problems
    events(store, 2)
    assert verify(store, incremental=True).ok and verify(store).ok
    # the purge's own event, which confirms the anchor, cannot go missing unseen
    purged = next(r["id"] for r in store.audit.rows() if r["action"] == "audit purged")
    attacker(store).execute("DELETE FROM audit WHERE id = ?", (purged,))
    assert not verify(store, incremental=True).ok


def rewrite_and_rechain(store: Store, rid: int) -> None:
    """Someone with the file rewrites one field of row `rid` and recomputes the chain from
    there to the head, so every row again matches its own hash and its predecessor."""
    con = attacker(store)
    rows = [r for r in store.audit.rows() if r["id"] >= rid]
    prev = str(rows[0]["prev_hash"])
    for r in rows:
        if r["id"] == rid:
            r["outcome"] = "ok" if r["outcome"] == "failed" else "failed"
        r["prev_hash"], r["hash"] = prev, audit_hash(prev, r)
        prev = r["hash"]
        con.execute("UPDATE audit SET outcome = ?, prev_hash = ?, hash = ? WHERE id = ?",
                    (r["outcome"], r["prev_hash"], r["hash"], r["id"]))
    con.execute("UPDATE audit_head SET last_hash = ?", (prev,))


def test_full_verify_fails_where_check_did_and_keeps_the_verified_point(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    store = make_app().extensions["formrelay"].store
    events(store)
    assert cli_run(tmp_path, "check", "--offline").exit_code in (0, 1)  # records the point
    point = store.audit.verified()
    assert point is not None
    rewrite_and_rechain(store, 3)
    checked = cli_run(tmp_path, "check", "--offline")
    assert checked.exit_code == 2 and f"row #{point['upto_id']}, verified on" in checked.output
    result = cli_run(tmp_path, "audit", "verify")
    assert result.exit_code == 2, result.output
    assert f"PROBLEM row #{point['upto_id']}, verified on" in result.output
    assert "FAILED" in result.output
    assert store.audit.verified() == point  # the full check did not bless the rewrite
    again = cli_run(tmp_path, "check", "--offline")  # and `check` still reports it
    assert again.exit_code == 2 and f"row #{point['upto_id']}, verified on" in again.output
    assert cli_run(tmp_path, "audit", "verify").exit_code == 2


def test_full_verify_never_moves_the_point_past_a_rewrite(make_app: Callable[..., Flask],
                                                         tmp_path: Path) -> None:
    store = make_app().extensions["formrelay"].store
    events(store, 4)
    assert cli_run(tmp_path, "audit", "verify").exit_code == 0
    point = store.audit.verified()
    assert point is not None and point["upto_id"] == store.audit.head()[0]
    events(store, 4)
    assert cli_run(tmp_path, "audit", "verify").exit_code == 0  # a clean run moves it on
    point = store.audit.verified()
    assert point is not None and point["upto_id"] == store.audit.head()[0]
    events(store, 2)  # newer rows, not yet verified, and an older one rewritten
    rewrite_and_rechain(store, 2)
    result = cli_run(tmp_path, "audit", "verify")
    assert result.exit_code == 2
    assert f"PROBLEM row #{point['upto_id']}, verified on" in result.output
    assert store.audit.verified() == point


# -- one chain per practice (migration 0070) ---------------------------------------------
def test_a_chain_written_before_practices_still_verifies_after_the_migration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from formrelay.store import base

    path = tmp_path / "formrelay.db"
    before = [m for m in base.MIGRATIONS if m[0] < "0070"]  # the version before 0070
    with monkeypatch.context() as m:
        m.setattr(base, "MIGRATIONS", before)
        old = Store(path)  # a database of the version before
        prev = "0" * 64
        with old.transaction() as con:
            for i in range(1, 6):  # what that version's audit() wrote
                fake = {"id": i, "at": f"2026-01-0{i}T00:00:00.000000Z", "action": "login",
                        "outcome": "ok", "actor": f"user:u{i}", "ip": "192.0.2.1",
                        "reference": "", "form_id": "", "detail": "", "prev_hash": prev}
                fake["hash"] = prev = audit_hash(prev, fake)
                con.execute(FORGE, fake)
            con.execute("INSERT INTO audit_verified VALUES (1, 3, ?, 0, ?)",
                        (con.execute("SELECT hash FROM audit WHERE id = 3").fetchone()[0],
                         "2026-01-06T00:00:00.000000Z"))
        old.close()
    store = Store(path)  # start-up runs 0070
    assert store.audit.head() == (5, prev)
    assert store.audit.verified()["upto_id"] == 3  # type: ignore[index]
    result = verify(store, incremental=True)
    assert result.ok and result.since_id == 3, result.problems
    assert verify(store).ok and verify(store).rows == 5
    store.audit.append("login", actor="user:new")
    store.audit.append("login", actor="user:oost", practice="oost")
    assert store.audit.head()[0] == 6 and store.audit.head("oost")[0] == 1
    assert verify(store).ok and verify(store, practice="oost").rows == 1


def test_each_practice_chain_is_verified_and_exported_on_its_own(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app()
    store = app.extensions["formrelay"].store
    for practice in ("default", "noord", "zuid"):
        for i in range(3):
            store.audit.append("downloaded", actor=f"user:{practice}{i}", reference="FR-AAAA-BBBB"
                               if practice == "noord" else "", practice=practice)
    ok = cli_run(tmp_path, "audit", "verify")
    assert ok.exit_code == 0, ok.output
    assert "practice noord: 3 rows checked (#1 to #3)" in ok.output
    assert "practice zuid: 3 rows checked" in ok.output
    # a row moved into another practice's chain no longer fits either chain
    con = attacker(store)
    con.execute("UPDATE audit SET practice = 'zuid', id = 4 WHERE practice = 'noord' AND id = 3")
    con.close()
    bad = cli_run(tmp_path, "audit", "verify")
    assert bad.exit_code == 2
    assert "PROBLEM practice noord: row #3 missing at the end" in bad.output
    assert "PROBLEM practice zuid: row #4 was changed" in bad.output
    only = cli_run(tmp_path, "audit", "verify", "--practice", "default")
    assert only.exit_code == 0 and "practice" not in only.output.split("ok:")[0]
    unknown = cli_run(tmp_path, "audit", "verify", "--practice", "west")
    assert unknown.exit_code == 2 and "no audit chain for practice 'west'" in unknown.output
    export = cli_run(tmp_path, "audit", "export", "--reference", "FR-AAAA-BBBB",
                     "--practice", "noord")
    assert "2 event(s)" in export.output and "user:noord2" not in export.output
    assert "No events recorded" in cli_run(tmp_path, "audit", "export", "--reference",
                                           "FR-AAAA-BBBB", "--practice", "default").output
