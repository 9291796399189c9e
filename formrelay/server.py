"""Run the app under gunicorn from the CLI (`formrelay serve`)."""

from __future__ import annotations

from typing import Any

from .config import Settings


def run_gunicorn(settings: Settings, *, bind: str, workers: int, threads: int,
                 extra: dict[str, Any] | None = None) -> None:
    from gunicorn.app.base import BaseApplication

    from . import create_app

    class App(BaseApplication):
        def load_config(self) -> None:
            opts = {"bind": bind, "workers": workers, "threads": threads,
                    "worker_class": "gthread", "timeout": 60, "graceful_timeout": 30,
                    # no query strings in the access log: they may hold link secrets
                    "accesslog": "-", "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(L)s',
                    **(extra or {})}
            for key, value in opts.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(settings)

    App().run()
