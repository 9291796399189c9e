"""The operator's pre-flight: what `formrelay check` reports, line by line.

Each check returns (level, text) lines; the worst level decides the exit code
(0 ok, 1 warning, 2 error) so monitoring can run it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import datetime

from .config import Settings
from .crypto import CryptoError
from .relay import Relay
from .store import StoreError, utcnow

OK, WARN, ERROR = "ok", "warn", "error"
Line = tuple[str, str]
CHECKS: list[Callable[[Settings, Relay, datetime], list[Line]]] = []


def check(fn: Callable[[Settings, Relay, datetime], list[Line]]) -> Callable[..., list[Line]]:
    CHECKS.append(fn)
    return fn


@check
def data_folder(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    data = settings.data_dir
    mode = stat.S_IMODE(data.stat().st_mode)
    lines: list[Line] = []
    if not os.access(data, os.W_OK):
        return [(ERROR, f"data folder {data} is not writable; fix its owner or permissions")]
    if mode & 0o077:
        lines.append((WARN, f"data folder {data} is readable by others (mode {mode:o}); "
                            f"run `chmod 700 {data}`"))
    else:
        lines.append((OK, f"data folder {data}"))
    try:
        relay.store.check_writable()
        lines.append((OK, f"database {relay.store.path}"))
    except Exception as exc:  # noqa: BLE001 - reported as a check line
        lines.append((ERROR, f"database {relay.store.path} is not writable ({exc})"))
    return lines


@check
def keys(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    lines: list[Line] = []
    for st in relay.sync_keys().values():
        level = ERROR if not st.usable else WARN if st.warning else OK
        lines.append((level, "key " + st.line()))
    for spec in settings.forms.values():
        problems = relay.form_problems(spec)
        if problems:
            lines.append((ERROR, f"form {spec.id} is unavailable to patients until its keys "
                                 "are fixed"))
        else:
            lines.append((OK, f"form {spec.id} ({spec.delivery})"))
    return lines


def run_checks(settings: Settings, now: datetime | None = None) -> tuple[list[Line], int]:
    now = now or utcnow()
    lines: list[Line] = [(OK, f"config {settings.path}")]
    try:
        relay = Relay(settings)
    except (StoreError, CryptoError, OSError) as exc:
        lines.append((ERROR, str(exc)))
        return lines, 2
    for fn in CHECKS:
        try:
            lines.extend(fn(settings, relay, now))
        except OSError as exc:
            lines.append((ERROR, f"{fn.__name__.replace('_', ' ')}: {exc}"))
    worst = max((2 if lv == ERROR else 1 if lv == WARN else 0) for lv, _ in lines)
    return lines, worst
