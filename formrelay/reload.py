"""Reload the configuration without a restart: practices, forms, recipients, names.

A serving process (each gunicorn worker, the delivery worker) holds its `Services` in a
`Live`. When the config file or a file in `server.practices_dir` changes (looked at at
most every `server.reload_seconds`), or when the process got SIGHUP, the file is loaded
and checked first; only a valid configuration is built into new `Services` (sharing the
open store and keyring, so nothing in flight is dropped) and swapped in as a whole. A
request keeps the services it started with (web/common.py pins them). A bad file keeps
the old configuration and is logged once, naming the problem.

Every configuration a serving process takes is kept in the data folder as the last good
one (`remember`). A process that starts - a recycled gunicorn worker, a restart -
reads the files as they are now (`serving_settings`), never what its parent loaded
first; when they are broken it serves the last good configuration instead and says so,
so one bad practice file never takes the other practices down. No Flask here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError, KeyFileProblem, load_config, practice_files
from .crypto.keyfiles import check_key_files
from .errors import OperatorError
from .logs import log_exception
from .patient_copy.step import check_fonts
from .services import Services, build
from .settings import SECRET_KEY_ENV, Settings

log = logging.getLogger("formrelay.config")

# [server] settings used when the process starts (the app's limits, its proxy, its
# data folder): a reload names them and keeps the old values until a restart.
RESTART_SETTINGS = ("data_dir", "max_request_mb", "max_fields", "body_timeout_seconds",
                    "body_min_rate", "trusted_proxies", "rate_limit_ip", "rate_limit_form",
                    "rate_limit_storage", "log_level", "min_fill_seconds",
                    "form_token_max_age_minutes")

Signature = tuple[tuple[str, int, int, int], ...]
# The last good configuration, in the data folder (mode 0600; no secrets: those come
# from the environment). It carries a MAC keyed with FORMRELAY_SECRET_KEY: the data
# folder is writable by the service, the configuration files need not be, so a kept
# file formrelay did not write itself (another key for a recipient) is never served.
LAST_GOOD = "last-good-config.json"


def _mac(secret: str, body: dict[str, Any]) -> str:
    key = hashlib.sha256(f"formrelay last good config|{secret}".encode()).digest()
    text = json.dumps(body, ensure_ascii=False, sort_keys=True)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


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
    outside the data folder (the PDF fonts when a form offers a copy) and that every
    recipient's key file can be read and holds its pinned key. ConfigError (for a key
    file: KeyFileProblem) otherwise. Touches neither the data folder nor the database,
    so `formrelay check --config-only` runs it before the systemd unit sends SIGHUP."""
    check_fonts(settings)
    check_key_files(settings)
    return settings


def remember(settings: Settings) -> None:
    """Keep `settings` (read from the files, and valid) as the last good configuration,
    when the files still are what was read."""
    if not settings.sources or signature(settings) != settings.stamps:
        return  # a mapping, or the files changed meanwhile: the next load keeps them
    target = settings.data_dir / LAST_GOOD
    body: dict[str, Any] = {"config": str(settings.path), "files": dict(settings.sources),
                            "stamps": [list(s) for s in settings.stamps]}
    data = json.dumps({**body, "mac": _mac(settings.secret_key, body)}, ensure_ascii=False,
                      sort_keys=True, indent=1)
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if target.is_file() and target.read_text(encoding="utf-8") == data:
            return
        part = target.with_name(f".{LAST_GOOD}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, target)  # whole or not at all, for every process reading it
    except OSError as exc:
        log.warning("the last good configuration could not be kept in %s (%s); a restart "
                    "with a broken file will not start", target, exc.strerror or exc)


# config file -> its data folder, as last loaded in this process (a forked worker
# inherits it): where the last good configuration is when config.toml itself is broken
_data_dirs: dict[Path, Path] = {}


def last_good(path: str | Path, environ: Mapping[str, str]) -> Settings | None:
    """The last good configuration kept for the config file `path`, or None."""
    path = Path(path).expanduser().resolve()
    folder = _data_dirs.get(path) or _data_dir_of(path)
    if folder is None:
        return None
    kept = _kept(folder / LAST_GOOD, path, environ.get(SECRET_KEY_ENV, ""))
    if kept is None:
        return None
    files, stamps = kept
    settings = load_config(path, environ, saved=files)
    settings = dataclasses.replace(settings, stamps=stamps)
    try:
        return validated(settings)
    except KeyFileProblem:  # a key file changed since: that key is refused when imported
        return settings


def _kept(where: Path, path: Path, secret: str
          ) -> tuple[dict[str, str], tuple[tuple[str, int, int, int], ...]] | None:
    """The files and their stamps kept in `where` for the config file `path`, or None
    when there is none, or it is damaged or was not written by formrelay with this
    secret (logged: the start then fails with the files' own problem)."""
    try:
        kept = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("the last good configuration %s cannot be read (%s); not used", where, exc)
        return None
    if not isinstance(kept, dict) or kept.get("config") != str(path):
        return None  # another config file's (or not one at all)
    body = {k: v for k, v in kept.items() if k != "mac"}
    mac = kept.get("mac")
    if not secret or not isinstance(mac, str) or \
            not hmac.compare_digest(mac.encode(), _mac(secret, body).encode()):
        log.error("the last good configuration %s was not written by formrelay with this "
                  "FORMRELAY_SECRET_KEY (changed by hand, or the key changed); not used", where)
        return None
    files = kept.get("files")
    try:
        if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("files")
        # the stamps of the files it was read from: the first look at the files sees
        # that they changed since, and says again what is wrong with them
        stamps = tuple((str(p), int(m), int(z), int(i)) for p, m, z, i in kept["stamps"])
    except (KeyError, TypeError, ValueError) as exc:
        log.error("the last good configuration %s is damaged (%s); not used", where, exc)
        return None
    return files, stamps


def _data_dir_of(path: Path) -> Path | None:
    """server.data_dir of the config file `path`, read as leniently as can be: the file
    may be broken (then its data_dir line is looked for), as long as it names one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    try:
        server = tomllib.loads(text).get("server", {})
        value = server.get("data_dir", "data") if isinstance(server, dict) else None
    except tomllib.TOMLDecodeError:
        found = re.search(r'^\s*data_dir\s*=\s*["\']([^"\'\n]+)["\']', text, re.MULTILINE)
        value = found.group(1) if found else "data"
    if not isinstance(value, str):
        return None
    data_dir = Path(value).expanduser()
    return data_dir if data_dir.is_absolute() else (path.parent / data_dir).resolve()


def serving_settings(path: str | Path, environ: Mapping[str, str]) -> Settings:
    """The configuration a serving process starts with: the files as they are now when
    they are valid (then kept as the last good one). When they cannot be loaded, the
    last good one, with the problem logged (and `formrelay check` naming it); none kept:
    ConfigError. When they load but a key file is wrong, the files as they are: that
    key's forms stay unavailable and every other form serves (an older configuration
    could bring back a key the operator rotated out)."""
    try:
        loaded = load_config(path, environ)
    except ConfigError as exc:
        return _instead(path, environ, exc)
    try:
        settings = validated(loaded)
    except KeyFileProblem as exc:
        log.error("key file refused, its forms are unavailable until it is fixed: %s", exc)
        _data_dirs[loaded.path] = loaded.data_dir
        return loaded
    except ConfigError as exc:
        return _instead(path, environ, exc)
    _data_dirs[settings.path] = settings.data_dir
    remember(settings)
    return settings


def _instead(path: str | Path, environ: Mapping[str, str], exc: ConfigError) -> Settings:
    """The last good configuration, when the files cannot be used because of `exc`."""
    try:
        good = last_good(path, environ)
    except ConfigError:
        good = None
    if good is None:
        raise exc
    log.error("configuration cannot be used, the last good one stays in force until it is "
              "fixed: %s", exc)
    _data_dirs[good.path] = good.data_dir
    return good


class Live:
    """The services in force now; `current` reloads first when the files changed."""

    def __init__(self, services: Services, environ: Mapping[str, str], *, watch: bool = True,
                 monotonic: Callable[[], float] = time.monotonic):
        self._services = services
        self._environ = dict(environ)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # the stamps of the files as read, not as they are now: a change made since (while
        # this process started) is seen at the first look
        self._signature: Signature | None = services.settings.stamps or \
            signature(services.settings)
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

    def newest(self) -> Services:
        """The services after a reload under way (waiting for it) and after a look at the
        files now, whatever reload_seconds says. A request for a form its services do not
        know asks this before answering 404: the form may be in the configuration being
        loaded, or saved a moment ago."""
        if self._watch:
            self.check(wait=True)
        return self._services

    def check(self, *, wait: bool = False) -> bool:
        """Reload if the files changed (or SIGHUP asked); True when new settings took
        effect. Never raises: a bad configuration is logged and the old one stays.
        While another request reloads, return at once (it swaps for everyone), or with
        `wait` wait for it and look again."""
        if not self._lock.acquire(blocking=wait):
            return False
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
            new = validated(load_config(path, self._environ))
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
        remember(new)
        log.info("configuration reloaded from %s: %d practice(s), %d form(s)", path,
                 len(new.practices), len(new.forms))
        return True
