"""Times shown to people, in the practice's own time zone; and how times are stored.

`utcnow`, `iso` and `parse_iso` fix the one text form of every stored time (UTC,
microseconds, `Z`), which the store, tokens and the audit log share.

Storage, logs and the audit trail stay in UTC; only what a clinician or patient reads
(inbox, notification mail, the decrypted text body, the copy's PDF and pages) is turned
into `server.timezone` here, always with the zone's abbreviation (CET, CEST) so a time is
never ambiguous. The zone name is checked when the config is loaded (config.py).

One way to write a date per language, used by every page, mail and PDF a person reads:
Dutch day-month-year (17-05-1980), English year-month-day (1980-05-17, which no English
reader takes for another date). The JSON part of an encrypted submission keeps ISO 8601.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "Europe/Amsterdam"


# -- stored times: UTC, one text form (the store, the audit log, tokens) ----------------
def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """How every timestamp is stored: UTC with microseconds, e.g. 2026-12-08T00:45:00.000000Z
    (text order is time order)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
DATE_FORMATS = {"nl": "%d-%m-%Y", "en": "%Y-%m-%d"}


def date_format(lang: str) -> str:
    return DATE_FORMATS.get(lang, DATE_FORMATS["nl"])


@functools.cache
def zone(name: str) -> ZoneInfo:
    """The zone called `name`; ValueError naming the fix when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a known time zone") from None


def shown(dt: datetime, tz: str = DEFAULT_TZ, lang: str = "nl") -> str:
    """`dt` (aware, usually UTC) as local time in `tz`, labelled with the zone."""
    local = dt.astimezone(zone(tz))
    return f"{local.strftime(date_format(lang))} {local:%H:%M} {local.strftime('%Z')}"


def local_date(dt: datetime, tz: str = DEFAULT_TZ, lang: str = "nl") -> str:
    """The local calendar date of `dt` in `tz` (a date needs no zone label)."""
    return dt.astimezone(zone(tz)).strftime(date_format(lang))


def answer_date(iso: str, lang: str = "nl") -> str:
    """A date the patient answered (stored as ISO 8601), written as every other date
    in `lang`; a value that is not a date stays as it is."""
    try:
        return date.fromisoformat(iso).strftime(date_format(lang))
    except ValueError:
        return iso


def utc_shown(dt: datetime, seconds: bool = False) -> str:
    """`dt` (already in UTC, as stored) for an operator: "2026-10-01 09:30 UTC". The
    CLI, `check`, the worker's log and the operator's mails say UTC, not local time."""
    return f"{dt:%Y-%m-%d %H:%M:%S} UTC" if seconds else f"{dt:%Y-%m-%d %H:%M} UTC"
