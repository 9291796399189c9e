"""The store's shape: composed by concern, the engine behind one interface, the caller's
transaction as the one way to write several things at once, no configuration inside."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import formrelay.store as store_package
from formrelay.intake.relay import Relay
from formrelay.store.base import Concern

from .conftest import open_store

pytestmark = pytest.mark.usefixtures("database")  # opens its own stores

PACKAGE = Path(store_package.__file__).parent.parent
CONCERNS = ("submissions", "outbox", "audit", "clinicians", "protection", "copies",
            "uploads", "replies", "refusals", "readers", "backups")
# asking which engine this is, anywhere but in the engines themselves
ENGINE_BRANCH = re.compile(r"engine(\.name)? *(==|!=)|\b_pg\b|\"postgresql\" if|"
                           r"sqlite3\.|import (sqlite3|psycopg)|psycopg\.")


def test_the_store_is_composed_by_concern(tmp_path: Path) -> None:
    store = open_store(tmp_path / "formrelay.db")
    for name in CONCERNS:
        concern = getattr(store, name)
        assert isinstance(concern, Concern), name
        own = [n for n in dir(concern) if not n.startswith("_")
               and n not in ("store", "conn", "clock", "engine", "transaction")]
        # short names within the concern: store.submissions.add, not .add_submission
        singular = name.rstrip("s")
        assert not [n for n in own if singular in n.split("_")], (name, own)
    public = [n for n in dir(store) if not n.startswith("_")]
    assert len(public) <= 30, public  # was 128 members of eleven mixins
    assert not hasattr(store, "add_submission") and not hasattr(store, "practice_of_form")


def test_nothing_outside_the_engines_asks_which_engine_it_has() -> None:
    found = []
    for path in sorted((PACKAGE / "store").rglob("*.py")):
        if "engines" in path.parts:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ENGINE_BRANCH.search(line.split("#")[0]):
                found.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    for path in sorted(PACKAGE.rglob("*.py")):
        if "store" in path.relative_to(PACKAGE).parts[:1]:
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(PACKAGE)}: {m.group(0)}"
                  for m in re.finditer(r"engine(\.name)? *(==|!=)", text)]
    assert not found, "\n".join(found)


def test_the_store_calls_no_callback_of_its_callers() -> None:
    concerns = [c for c in vars(store_package).values()
                if inspect.isclass(c) and issubclass(c, Concern) and c is not Concern]
    assert len(concerns) == len(CONCERNS)
    for concern in concerns:
        for method in (m for n, m in vars(concern).items()
                       if callable(m) and not n.startswith("_")):
            assert "also" not in inspect.signature(method).parameters, method
    # nor does the relay: the form token is data it records in its own transaction
    params = inspect.signature(Relay.submit).parameters
    assert "also" not in params and "token" in params


def test_time_helpers_live_in_localtime() -> None:
    assert not {"iso", "parse_iso", "utcnow"} & set(store_package.__all__)
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"from \.+store(\.base)? import [^\n]*\b(iso|parse_iso|utcnow)\b",
                             text), path


def test_a_nested_transaction_joins_the_callers(tmp_path: Path) -> None:
    """What a caller writes with the concerns inside `store.transaction()` is one unit: a
    failure after the mail was marked sent leaves it queued, unaudited (the bookkeeping
    that used to be passed to the store as also=)."""
    store = open_store(tmp_path / "formrelay.db")
    store.outbox.enqueue("submission", "FR-AAAA-AAAA", ["dr@praktijk.test"])
    [mail] = store.outbox.claim("worker", 60)
    with pytest.raises(RuntimeError, match="bookkeeping failed"), store.transaction():
        store.outbox.done(mail, "sent", "accepted by test")
        store.audit.append("deleted", reference=mail.reference, detail="ciphertext deleted")
        raise RuntimeError("bookkeeping failed")
    assert [r["status"] for r in store.outbox.rows(("queued", "sent"))] == ["queued"]
    assert [r["action"] for r in store.audit.rows()] == ["queued"]
    with store.transaction():
        store.outbox.done(mail, "sent", "accepted by test")
        store.audit.append("deleted", reference=mail.reference, detail="ciphertext deleted")
    assert [r["action"] for r in store.audit.rows()] == ["queued", "sent", "deleted"]
