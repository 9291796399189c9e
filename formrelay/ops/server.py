"""gunicorn settings for formrelay, kept in this one place.

`deploy/gunicorn.conf.py` (containers, systemd) and `formrelay serve` both take their
settings from `gunicorn_options()`, so the two ways to run the service cannot drift.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from ..config import ConfigError, load_config
from ..settings import Settings

log = logging.getLogger("formrelay.config")

DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_WORKERS = 2
# open connections per worker process; each costs a greenlet and a few file descriptors
# (socket, SQLite, gpg's pipes while it encrypts), well under the usual limit of 1024
DEFAULT_CONNECTIONS = 100
# The access line's text; gunicorn's atoms are replaced by redacted ones in
# logs.GunicornLogger, so %(U)s is the path without query string and without any
# patient-copy link secret (/copy/[redacted]). The JSON line has the same facts as fields.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


def gunicorn_options(*, bind: str = DEFAULT_BIND, workers: int = DEFAULT_WORKERS,
                     connections: int = DEFAULT_CONNECTIONS,
                     log_level: str = "info") -> dict[str, Any]:
    """gunicorn settings: a few processes with gevent workers, generous timeouts for
    uploads over slow mobile links.

    gevent, not threads: a thread worker hands a thread to each connection and keeps it
    while the client sends, so a handful of clients sending slowly (or nothing) held
    every thread and no patient got an answer. With gevent a connection costs a
    greenlet; a connection's first headers must arrive within a few seconds and one
    client network holds a bounded share of the connections (gworker.py), a body keeps
    to server.body_timeout_seconds / body_min_rate (web/slowbody.py), and gpg (a
    subprocess), SQLite and the locks of the store work as with threads (gunicorn
    monkey-patches threading, subprocess and time.sleep)."""
    opts: dict[str, Any] = {
        "bind": bind,
        "workers": workers,
        # gevent, plus a deadline for a connection's first headers and a bound on the
        # connections of one client network (gworker.py)
        "worker_class": "formrelay.ops.gworker.GuardedGeventWorker",
        "worker_connections": connections,
        # a worker silent this long is restarted; a 25 MB upload on a slow link plus
        # encryption fits well within it
        "timeout": 120,
        "graceful_timeout": 30,
        # how long a kept-alive connection may wait for its next request (a new
        # connection's first headers have gworker.HEADER_SECONDS, whatever this says)
        "keepalive": 5,
        # recycle workers now and then; jitter so they do not all restart together
        "max_requests": 2000,
        "max_requests_jitter": 200,
        # no preload: each worker opens its own SQLite connections after the fork
        "preload_app": False,
        # the app trusts forwarded headers through ProxyFix (server.trusted_proxies)
        # only; gunicorn must not decide on its own that a request came over https
        "forwarded_allow_ips": "127.0.0.1",
        "secure_scheme_headers": {},
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": log_level.lower(),
        "access_log_format": ACCESS_LOG_FORMAT,
        "logger_class": "formrelay.logs.GunicornLogger",
        "proc_name": "formrelay",
        "umask": 0o077,
        # in the master, before any worker: counters in a Redis that does not answer stop
        # the start with one line (a worker that failed to boot would stop gunicorn later)
        "on_starting": check_before_workers,
        # in each worker, its app loaded: the patient's pages compiled before any request
        "post_worker_init": warm_worker,
    }
    known = _known_settings()
    if "forwarder_headers" in known:
        # no SCRIPT_NAME / PATH_INFO from request headers, whoever sends them
        opts["forwarder_headers"] = ""
    if "control_socket_disable" in known:
        # gunicorn 24+ opens a control socket in $HOME; nothing here uses it, and under
        # systemd's ProtectHome or a read-only container there is no writable home
        opts["control_socket_disable"] = True
    if os.path.isdir("/dev/shm"):  # noqa: S108 - heartbeat files in memory, not on disk
        # heartbeat files: tmpfs avoids stalls when /tmp is on a slow or read-only disk
        opts["worker_tmp_dir"] = "/dev/shm"  # noqa: S108
    return opts


def refuse_without_counters(settings: Settings) -> None:
    """Raise `CountersDown` when the rate-limit counters are in a Redis that does not
    answer (the database's are checked when the store opens)."""
    if settings.server.rate_limit_storage:
        from ..intake import ratelimit

        ratelimit.require_reachable(settings, ratelimit.open_storage(settings))


def refuse_bad_environment(environ: Mapping[str, str]) -> None:
    """Raise `ConfigError` for a FORMRELAY_CONNECTIONS_PER_ADDRESS that is not a whole
    number: the workers read it, and a worker that fails to boot stops gunicorn."""
    from .gworker import PER_ADDRESS_ENV, per_address_limit

    try:
        per_address_limit(environ, 0)
    except ValueError:
        raise ConfigError(f"{PER_ADDRESS_ENV} must be a whole number of connections per "
                          f"client address (0 = no limit), not "
                          f"{environ.get(PER_ADDRESS_ENV)!r}") from None


def check_before_workers(server: Any) -> None:
    """gunicorn's on_starting hook: `refuse_without_counters` for the configured settings
    (`formrelay serve` hands them over, deploy/gunicorn.conf.py names the file in
    FORMRELAY_CONFIG), as gunicorn's one-line "Error: ..." and exit code 1."""
    from ..errors import FormrelayError
    from ..reload import serving_settings
    from ..settings import CONFIG_ENV

    try:
        refuse_bad_environment(os.environ)
        settings = getattr(server.app, "formrelay_settings", None)
        if settings is None:
            path = os.environ.get(CONFIG_ENV)
            if not path:
                return  # the app factory says what is missing
            settings = serving_settings(path, os.environ)
        refuse_without_counters(settings)
    except FormrelayError as exc:
        raise RuntimeError(" ".join(str(exc).splitlines())) from None


# The templates a patient's request renders (and what they extend and include).
PATIENT_TEMPLATES = ("base.html", "_contact.html", "form.html", "thanks.html", "error.html")


def warm_worker(worker: Any) -> None:
    """gunicorn's post_worker_init hook: compile the patient's templates in the worker
    before it takes a request. Jinja compiles a template on first use, so otherwise the
    first posts of every (recycled) worker waited for it. Any other app: nothing."""
    env = getattr(worker.wsgi, "jinja_env", None)
    if env is None or "formrelay" not in getattr(worker.wsgi, "extensions", {}):
        return
    for name in PATIENT_TEMPLATES:
        env.get_template(name)


def _known_settings() -> set[str]:
    from gunicorn.config import KNOWN_SETTINGS

    return {s.name for s in KNOWN_SETTINGS}


def options_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """gunicorn settings from FORMRELAY_BIND / _WORKERS / _CONNECTIONS
    (deploy/gunicorn.conf.py)."""
    return gunicorn_options(
        bind=environ.get("FORMRELAY_BIND", DEFAULT_BIND),
        workers=int(environ.get("FORMRELAY_WORKERS", DEFAULT_WORKERS)),
        connections=int(environ.get("FORMRELAY_CONNECTIONS", DEFAULT_CONNECTIONS)),
        log_level=environ.get("FORMRELAY_LOG_LEVEL", "info"),
    )


def run_gunicorn(settings: Settings, *, bind: str, workers: int, connections: int,
                 extra: dict[str, Any] | None = None) -> None:
    """Serve under gunicorn. Every worker gunicorn starts (at first, after SIGHUP, when
    one is recycled after max_requests) reads the configuration files as they are then,
    never what this master loaded first, or keeps the last good configuration when they
    are broken (reload.serving_settings). SIGHUP to this (master) process checks the
    files first: a bad one is logged and nothing is restarted, the workers keep what
    they serve. Each worker also reloads by itself when the files change (reload.py)."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    from .. import create_app
    from ..reload import serving_settings, validated

    class Master(Arbiter):
        def handle_hup(self) -> None:
            try:
                good = validated(load_config(settings.path, os.environ))
            except ConfigError as exc:
                log.error("configuration not reloaded, the previous one stays in force: %s",
                          exc)
                return
            log.info("configuration checked on SIGHUP: %d practice(s), %d form(s); "
                     "restarting the workers gracefully", len(good.practices),
                     len(good.forms))
            super().handle_hup()

    class App(BaseApplication):
        formrelay_settings = settings

        def load_config(self) -> None:
            opts = {**gunicorn_options(bind=bind, workers=workers, connections=connections,
                                       log_level=settings.server.log_level), **(extra or {})}
            for key, value in opts.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(serving_settings(settings.path, os.environ))

        def run(self) -> None:
            Master(self).run()

    App().run()
