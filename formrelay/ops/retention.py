"""Retention: nothing is kept longer than the practice decided (AVG art. 5(1)(e)).

`purge(settings, store, now, purgers=...)` deletes the ciphertext of held submissions past the
`retention_days` their form had when they were stored (each deletion audited, in the
chain of the practice recorded with them), audit rows older than
`server.audit_retention_years` (behind a recorded anchor, so the chain still verifies),
submission metadata as old as that, stale sessions and login counters, and the
counters of refused anonymous attempts after `REFUSALS_KEPT_DAYS`. The worker
runs it on a schedule (`periodic`), `formrelay purge` on demand. Other features' own
steps (expired patient copies, old outbox records) are passed in as `purgers`, a table
of (name, step) that services.purgers() assembles.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..audit_actions import AuditAction
from ..localtime import iso, parse_iso
from ..mail.notify import flush
from ..settings import Settings
from ..store import REFUSALS_KEPT_DAYS, Store

log = logging.getLogger("formrelay.retention")

PURGE_EVERY_SECONDS = 3600
FAILURES_KEPT = timedelta(days=1)

# An extra purge step of another feature: how many items it removed as of `now`.
Purger = Callable[[Settings, Store, datetime], int]
# The steps `purge` runs after its own, in order, each with the name it reports under.
Purgers = tuple[tuple[str, Purger], ...]


@dataclass
class PurgeReport:
    held: list[str] = field(default_factory=list)
    audit_rows: int = 0
    metadata_rows: int = 0
    sessions: int = 0
    refusals: int = 0
    other: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"held submissions deleted: {len(self.held)}"
               + (f" ({', '.join(self.held)})" if self.held else ""),
               f"audit rows older than the audit retention removed: {self.audit_rows}",
               f"old submission records removed: {self.metadata_rows}",
               f"expired sessions removed: {self.sessions}",
               f"refused anonymous attempts counted, minutes removed: {self.refusals}"]
        out += [f"{name}: {n}" for name, n in self.other.items()]
        return out


def years_before(now: datetime, years: int) -> datetime:
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # 29 February
        return now.replace(year=now.year - years, day=28)


def purge(settings: Settings, store: Store, now: datetime | None = None, *,
          purgers: Purgers) -> PurgeReport:
    """Delete everything past its date as of `now`, other features' data with
    `purgers`; every deletion is audited."""
    now = now or store.clock()
    report = PurgeReport()
    for row in store.submissions.rows(status="held"):
        # the retention recorded with the submission, whatever its form says today
        days = int(row["keep_days"] or 0) or settings.retention_days(row["form_id"])
        if parse_iso(row["received_at"]) + timedelta(days=days) > now:
            continue
        with store.transaction():
            current = store.submissions.get(row["reference"])
            if current is None or current["status"] != "held":
                continue
            store.submissions.set_status(row["reference"], "deleted", drop_ciphertext=True)
            store.audit.append(AuditAction.DELETED, reference=row["reference"],
                               form_id=row["form_id"],
                        detail=f"retention: held longer than {days} days; ciphertext deleted")
        report.held.append(row["reference"])
    for name, step in purgers:
        report.other[name] = step(settings, store, now)
    cutoff = years_before(now, settings.server.audit_retention_years)
    report.audit_rows = store.audit.purge(cutoff)[0]
    report.metadata_rows = store.submissions.purge_metadata(cutoff)
    report.sessions = store.clinicians.purge(
        now - timedelta(minutes=settings.server.session_idle_minutes), now - FAILURES_KEPT)
    report.refusals = store.refusals.purge(now - timedelta(days=REFUSALS_KEPT_DAYS))
    if report.held or report.audit_rows or report.metadata_rows:
        log.info("purge as of %s: %s", iso(now), "; ".join(report.lines()))
    return report


_last_purge = 0.0
_lock = threading.Lock()


def periodic(settings: Settings, store: Store, now: datetime | None = None, *,
             purgers: Purgers) -> None:
    """What the worker runs on every pass: batched notification mails now, the purge
    at most once an hour per process (it is idempotent, so several processes may)."""
    global _last_purge
    now = now or store.clock()
    flush(settings, store, now)
    with _lock:
        due = time.monotonic() - _last_purge >= PURGE_EVERY_SECONDS or not _last_purge
        if due:
            _last_purge = time.monotonic()
    if due:
        purge(settings, store, now, purgers=purgers)
