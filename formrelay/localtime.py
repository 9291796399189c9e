"""Times shown to people, in the practice's own time zone.

Storage, logs and the audit trail stay in UTC; only what a clinician or patient reads
(inbox, notification mail, the decrypted text body, the copy's PDF and pages) is turned
into `server.timezone` here, always with the zone's abbreviation (CET, CEST) so a time is
never ambiguous. The zone name is checked when the config is loaded (config.py).
"""

from __future__ import annotations

import functools
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "Europe/Amsterdam"
CLINICIAN_FORMAT = "%Y-%m-%d %H:%M"
PATIENT_FORMAT = "%d-%m-%Y %H:%M"


@functools.cache
def zone(name: str) -> ZoneInfo:
    """The zone called `name`; ValueError naming the fix when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a known time zone") from None


def shown(dt: datetime, tz: str = DEFAULT_TZ, fmt: str = CLINICIAN_FORMAT) -> str:
    """`dt` (aware, usually UTC) as local time in `tz`, labelled with the zone."""
    local = dt.astimezone(zone(tz))
    return f"{local.strftime(fmt)} {local.strftime('%Z')}"


def local_date(dt: datetime, tz: str = DEFAULT_TZ, fmt: str = "%Y-%m-%d") -> str:
    """The local calendar date of `dt` in `tz` (a date needs no zone label)."""
    return dt.astimezone(zone(tz)).strftime(fmt)


def utc_shown(dt: datetime, seconds: bool = False) -> str:
    """`dt` (already in UTC, as stored) for an operator: "2026-10-01 09:30 UTC". The
    CLI, `check`, the worker's log and the operator's mails say UTC, not local time."""
    return f"{dt:%Y-%m-%d %H:%M:%S} UTC" if seconds else f"{dt:%Y-%m-%d %H:%M} UTC"
