"""`formrelay serve`: the web service under gunicorn (ops/server.py)."""

from __future__ import annotations

import os

import click

from .common import Context, pass_ctx


@click.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address:port.")
@click.option("--workers", default=2, show_default=True, help="Gunicorn worker processes.")
@click.option("--connections", default=100, show_default=True,
              help="Open connections per worker (gevent); slow clients cost one each.")
@pass_ctx
def serve(ctx: Context, bind: str, workers: int, connections: int) -> None:
    """Run the web service under gunicorn (gevent workers).

    \b
    Example:
      formrelay --config config.toml serve --bind 127.0.0.1:8000 --workers 2
    """
    settings = ctx.serving_settings()
    from ..ops.server import refuse_bad_environment, refuse_without_counters, run_gunicorn

    refuse_bad_environment(os.environ)
    refuse_without_counters(settings)  # Redis not answering: one line, nothing started

    run_gunicorn(settings, bind=bind, workers=workers, connections=connections)


COMMANDS: list[click.Command] = [serve]
