"""Reload the configuration without a restart: practices, forms, recipients, names.

A serving process (each gunicorn worker, the delivery worker) holds its `Services` in a
`Live`. When the config file or a file in `server.practices_dir` changes (looked at at
most every `server.reload_seconds`), or when the process got SIGHUP, the file is loaded
and checked first; only a valid configuration is built into new `Services` (sharing the
open store and keyring, so nothing in flight is dropped) and swapped in as a whole. A
request keeps the services it started with (web/common.py pins them). A bad file keeps
the old configuration and is logged once, naming the problem. No Flask here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .config import ConfigError, Settings, load_config, practice_files
from .errors import OperatorError
from .logs import log_exception
from .patient_copy.step import check_fonts
from .services import Services, build

log = logging.getLogger("formrelay.config")

# [server] settings used when the process starts (the app's limits, its proxy, its
# data folder): a reload names them and keeps the old values until a restart.
RESTART_SETTINGS = ("data_dir", "max_request_mb", "max_fields", "body_timeout_seconds",
                    "body_min_rate", "trusted_proxies", "rate_limit_ip", "rate_limit_form",
                    "rate_limit_storage", "log_level", "min_fill_seconds",
                    "form_token_max_age_minutes")

Signature = tuple[tuple[str, int, int, int], ...]


def signature(settings: Settings) -> Signature:
    """What tells a changed configuration: each file's name, mtime, size and inode (an
    editor that saves by renaming makes a new one)."""
    paths = [settings.path]
    try:
        paths += practice_files(settings.path, settings.server.practices_dir)
    except ConfigError:
        pass  # the folder went away: the config file's own entry tells, load says why
    out = []
    for p in paths:
        try:
            st = Path(p).stat()
            out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(p), -1, -1, -1))
    return tuple(out)


def validated(settings: Settings) -> Settings:
    """What a reload checks before it builds anything, given the freshly loaded file
    (load_config checked every key and value): that serving it needs nothing missing
    outside the data folder (the PDF fonts when a form offers a copy). ConfigError
    otherwise. Touches neither the data folder nor the database, so `formrelay check
    --config-only` runs it before the systemd unit sends SIGHUP."""
    check_fonts(settings)
    return settings


class Live:
    """The services in force now; `current` reloads first when the files changed."""

    def __init__(self, services: Services, environ: Mapping[str, str], *, watch: bool = True,
                 monotonic: Callable[[], float] = time.monotonic):
        self._services = services
        self._environ = dict(environ)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._signature: Signature | None = signature(services.settings)
        self._next_look = 0.0
        self._asked = False  # SIGHUP
        self._watch = watch

    @property
    def current(self) -> Services:
        interval = self._services.settings.server.reload_seconds
        if self._watch and (self._asked or (interval and self._monotonic() >= self._next_look)):
            self.check()
        return self._services

    def ask(self) -> None:
        """Reload at the next look (a signal handler calls this: no I/O here)."""
        self._asked = True

    def check(self) -> bool:
        """Reload if the files changed (or SIGHUP asked); True when new settings took
        effect. Never raises: a bad configuration is logged and the old one stays."""
        if not self._lock.acquire(blocking=False):
            return False  # another request is reloading; it swaps for everyone
        try:
            old = self._services
            self._next_look = self._monotonic() + max(1, old.settings.server.reload_seconds)
            asked, self._asked = self._asked, False
            sig = signature(old.settings)
            if sig == self._signature and not asked:
                return False
            self._signature = sig
            return self._reload(old)
        finally:
            self._lock.release()

    def _reload(self, old: Services) -> bool:
        path = old.settings.path
        try:
            new = load_config(path, self._environ)
            if new == old.settings:
                return False
            if new.data_dir != old.settings.data_dir:
                raise ConfigError(f"{path}: server.data_dir changed to {new.data_dir}; "
                                  "restart formrelay to use another data folder")
            services = build(new, old.clock, extra_steps=old.extra_steps, store=old.store,
                             keyring=old.keyring)
            services.reload_startup()
        except (OperatorError, OSError) as exc:
            log.error("configuration not reloaded, the previous one stays in force: %s", exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a reload must never take serving down
            log_exception(log, "configuration not reloaded, the previous one stays in force",
                          exc=exc)
            return False
        for key in RESTART_SETTINGS:
            if getattr(new.server, key) != getattr(old.settings.server, key):
                log.warning("server.%s changed: it takes effect when formrelay is restarted",
                            key)
        self._services = services
        log.info("configuration reloaded from %s: %d practice(s), %d form(s)", path,
                 len(new.practices), len(new.forms))
        return True
