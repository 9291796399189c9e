"""`formrelay purge`: delete now what is past its retention (ops/retention.py)."""

from __future__ import annotations

import click

from .common import Context, pass_ctx


@click.command()
@pass_ctx
def purge(ctx: Context) -> None:
    """Delete now what is past its retention: held submissions after their form's
    retention_days, audit rows after audit_retention_years, expired sessions. The worker
    does this every hour; each deletion is audited.

    \b
    Example:
      formrelay --config config.toml purge
    """
    from ..ops.retention import purge as run_purge

    built = ctx.services()
    report = run_purge(built.settings, built.store, purgers=built.purgers)
    for line in report.lines():
        click.echo(line)


COMMANDS: list[click.Command] = [purge]
