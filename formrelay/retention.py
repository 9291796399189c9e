"""Retention: nothing is kept longer than the practice decided (AVG art. 5(1)(e)).

`purge(settings, store, now)` deletes the ciphertext of held submissions past their
form's `retention_days` (each deletion audited), audit rows older than
`server.audit_retention_years` (behind a recorded anchor, so the chain still verifies),
submission metadata as old as that, and stale sessions and login counters. The worker
runs it on a schedule (`periodic`), `formrelay purge` on demand. Other features add
their own steps (e.g. expired patient copies) with `register_purger`.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .config import Settings
from .store import Store, iso, parse_iso

log = logging.getLogger("formrelay.retention")

PURGE_EVERY_SECONDS = 3600
FAILURES_KEPT = timedelta(days=1)

Purger = Callable[[Settings, Store, datetime], int]
# Extra purge steps of other features: name -> step returning how many items it removed.
PURGERS: dict[str, Purger] = {}
# Modules that register such steps; imported before each purge, so `formrelay purge`
# in a fresh process runs them too.
PURGER_MODULES = ["formrelay.copy_mail", "formrelay.delivery"]


def register_purger(name: str, step: Purger) -> None:
    PURGERS[name] = step


@dataclass
class PurgeReport:
    held: list[str] = field(default_factory=list)
    audit_rows: int = 0
    metadata_rows: int = 0
    sessions: int = 0
    other: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"held submissions deleted: {len(self.held)}"
               + (f" ({', '.join(self.held)})" if self.held else ""),
               f"audit rows older than the audit retention removed: {self.audit_rows}",
               f"old submission records removed: {self.metadata_rows}",
               f"expired sessions removed: {self.sessions}"]
        out += [f"{name}: {n}" for name, n in self.other.items()]
        return out


def years_before(now: datetime, years: int) -> datetime:
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # 29 February
        return now.replace(year=now.year - years, day=28)


def purge(settings: Settings, store: Store, now: datetime | None = None) -> PurgeReport:
    """Delete everything past its date as of `now`; every deletion is audited."""
    now = now or store.clock()
    for name in PURGER_MODULES:
        importlib.import_module(name)
    report = PurgeReport()
    for row in store.submissions(status="held"):
        days = settings.retention_days(row["form_id"])
        if parse_iso(row["received_at"]) + timedelta(days=days) > now:
            continue
        with store.transaction():
            current = store.submission(row["reference"])
            if current is None or current["status"] != "held":
                continue
            store.set_status(row["reference"], "deleted", drop_ciphertext=True)
            store.audit("deleted", reference=row["reference"], form_id=row["form_id"],
                        detail=f"retention: held longer than {days} days; ciphertext deleted")
        report.held.append(row["reference"])
    for name, step in PURGERS.items():
        report.other[name] = step(settings, store, now)
    cutoff = years_before(now, settings.server.audit_retention_years)
    report.audit_rows = store.purge_audit(cutoff)[0]
    report.metadata_rows = store.purge_metadata(cutoff)
    report.sessions = store.purge_sessions_and_failures(
        now - timedelta(minutes=settings.server.session_idle_minutes), now - FAILURES_KEPT)
    if report.held or report.audit_rows or report.metadata_rows:
        log.info("purge as of %s: %s", iso(now), "; ".join(report.lines()))
    return report


_last_purge = 0.0
_lock = threading.Lock()


def periodic(settings: Settings, store: Store, now: datetime | None = None) -> None:
    """What the worker runs on every pass: batched notification mails now, the purge
    at most once an hour per process (it is idempotent, so several processes may)."""
    global _last_purge
    from .notify import flush

    now = now or store.clock()
    flush(settings, store, now)
    with _lock:
        due = time.monotonic() - _last_purge >= PURGE_EVERY_SECONDS or not _last_purge
        if due:
            _last_purge = time.monotonic()
    if due:
        purge(settings, store, now)
