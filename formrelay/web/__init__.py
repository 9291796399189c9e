"""The Flask layer: builds the app around the `Services` (services.py) and registers
the blueprints, which reach the services in force through `common.services()`.

Views stay thin: they parse the request, call the core, render the answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask

from ..config import ConfigError, load_config, parse_config
from ..localtime import utcnow
from ..reload import Live, serving_settings
from ..services import Services, build
from ..settings import CONFIG_ENV, Settings
from . import (
    clinician,
    clinician_uploads,
    errors,
    framing,
    headers,
    health,
    protect,
    public,
    upload_pages,
    widget,
)
from . import copy as copy_view
from . import replies as replies_view
from . import uploads as uploads_view
from .request import InMemoryRequest
from .slowbody import BodyDeadline


def settings_from(config: Any, environ: Mapping[str, str]) -> Settings:
    if isinstance(config, Settings):
        return config
    if isinstance(config, str | Path):
        return load_config(config, environ)
    if isinstance(config, Mapping):
        return parse_config(config, Path.cwd() / "config.toml", environ)
    if config is None:  # the deployed app (deploy/gunicorn.conf.py): each worker reads
        # the files as they are now, or keeps the last good configuration (reload.py)
        path = environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(f"no configuration: pass --config or set {CONFIG_ENV}")
        return serving_settings(path, environ)
    raise TypeError(f"unsupported config {type(config).__name__}")


def build_app(config: Any, *, environ: Mapping[str, str] | None = None,
              clock: Callable[[], datetime] | None = None) -> Flask:
    """`config` as for `settings_from`, or `Services` already built (with extra steps)."""
    env = os.environ if environ is None else environ
    services = config if isinstance(config, Services) else \
        build(settings_from(config, env), clock or utcnow)
    settings = services.settings
    app = Flask("formrelay", template_folder=str(Path(__file__).parent.parent / "templates"),
                static_folder=str(Path(__file__).parent.parent / "static"))
    app.request_class = InMemoryRequest
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.server.max_request_mb * 1024 * 1024,
        MAX_FORM_PARTS=settings.server.max_fields + 20,
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        JSON_AS_ASCII=False,
    )
    # Never debug mode (FLASK_DEBUG in the environment would turn it on): no debugger,
    # no tracebacks to the browser (ASVS 16.2.5).
    app.debug = False
    # Never expose config to templates.
    app.jinja_env.globals.pop("config", None)
    logging.getLogger("formrelay").setLevel(settings.server.log_level)
    services.startup()
    app.extensions["formrelay"] = services  # as built; requests use the live ones
    # the config file is watched when it is one (not a mapping a test passed)
    watched = not isinstance(config, Mapping) and settings.path.is_file()
    app.extensions["formrelay.live"] = Live(services, env, watch=watched)
    if settings.server.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = settings.server.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    # a body trickled in to hold a connection is refused (408) before any view reads it
    deadline = BodyDeadline(app.wsgi_app, timeout=settings.server.body_timeout_seconds,
                            min_rate=settings.server.body_min_rate)
    app.wsgi_app = deadline  # type: ignore[method-assign]
    errors.register(app)
    framing.register(app)  # before every view: a body on GET, HTTP/1.1 without Host
    headers.register(app)
    app.register_blueprint(public.bp)
    protect.register(app, services.relay)  # tokens and rate limits on the form's POST route
    widget.register(app)
    app.register_blueprint(health.bp)
    copy_view.register(app)  # patient copies: /copy/<token>
    # documents from patients: /u/ask, the upload page and protocol, the clinician's list
    uploads_view.register(app)
    upload_pages.register(app)
    clinician_uploads.register(app)
    replies_view.register(app)  # answers to patients: /r/, /clinician/answer/<reference>
    protect.limit_patient_posts(app, services.relay)  # /r/, /r/reply, /u/ask per address
    # /clinician/: sessions, login, inbox, account, API
    clinician.register(app)
    return app


__all__ = [
    "build_app",
    "settings_from",
]
