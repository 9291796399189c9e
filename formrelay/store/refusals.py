"""Refused anonymous attempts, counted instead of logged one by one.

A bad API token, a login under a name nobody has or a request without its CSRF token
comes from someone who is nobody yet: writing a permanent audit row for each would let
anyone grow the audit log (kept for years) by the thousand a minute. So each is counted
here, one row per client address, minute and kind of attempt; the first of each
minute still goes to the audit log (store/audit.py), the rest only raise the count.
The counters hold no content and no typed names, and the retention purge deletes them
after `REFUSALS_KEPT_DAYS`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..localtime import iso
from .base import Concern

REFUSALS_KEPT_DAYS = 30


class Refusals(Concern):
    """Count refused anonymous attempts per address and minute; read and purge them."""

    def count(self, ip: str, what: str) -> int:
        """Count one refused attempt of kind `what` from `ip` in the current minute;
        returns the minute's count so far (1: the first, which the caller audits).
        Joins the caller's transaction if there is one."""
        minute = iso(self.clock())[:16]  # 2026-12-07T21:24
        with self.transaction() as conn:
            row = conn.execute(
                "INSERT INTO refused_attempts (ip, minute, what, count) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (ip, minute, what) DO UPDATE SET "
                "count = refused_attempts.count + 1 RETURNING count",
                (ip, minute, what)).fetchone()
        return int(row[0])

    def counts(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """The counters (of minutes from `since` on), oldest first."""
        start = iso(since)[:16] if since else ""
        return [dict(r) for r in self.conn.execute(
            "SELECT ip, minute, what, count FROM refused_attempts WHERE minute >= ? "
            "ORDER BY minute, ip, what", (start,))]

    def purge(self, before: datetime) -> int:
        """Delete the counters of minutes before `before`; returns how many."""
        with self.transaction() as conn:
            return int(conn.execute("DELETE FROM refused_attempts WHERE minute < ?",
                                    (iso(before)[:16],)).rowcount)
