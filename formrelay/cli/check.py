"""`formrelay check`: the operator's pre-flight, one line per check, exit 0/1/2 for
monitoring (ops/checks.py); with --config-only, whether a reload would take the files.
"""

from __future__ import annotations

import sys

import click

from ..config import ConfigError
from .common import EXIT_ERROR, EXIT_OK, EXIT_WARN, Context, pass_ctx


@click.command()
@click.option("--offline", is_flag=True, help="Skip the connection to the mail relay.")
@click.option("--config-only", is_flag=True,
              help="Only load and validate the config file (and practices_dir, and every "
                   "recipient's key file), as a reload does first; touches neither the data "
                   "folder nor the database.")
@pass_ctx
def check(ctx: Context, offline: bool, config_only: bool) -> None:
    """The operator's pre-flight: config, data folder, database, every key's state and
    expiry, the packet gpg writes (SEIPD v1), the mail relay (TLS handshake and
    certificate), the outbox's oldest mail, the clock and the audit chain (the rows
    since the last verification). One line each; exit 0 ok, 1 warning, 2 error, for
    monitoring. With --config-only: whether a reload would take the file (exit 0) or
    keep the old configuration (exit 2); the systemd unit runs it before SIGHUP.

    \b
    Example:
      formrelay --config config.toml check
      formrelay --config config.toml check --offline
      formrelay --config config.toml check --config-only
    """
    from .. import services
    from ..ops.checks import run_checks

    try:
        if config_only:
            from ..reload import validated

            settings = validated(ctx.settings())
            click.echo(f"ok    config {settings.path}: {len(settings.practices)} practice(s), "
                       f"{len(settings.forms)} form(s)")
            sys.exit(EXIT_OK)
        settings = ctx.settings()
    except ConfigError as exc:  # a broken config is one of check's errors, not a warning
        click.echo(f"error {exc}")
        click.echo("errors")
        sys.exit(EXIT_ERROR)
    lines, code = run_checks(settings, checks=services.checks(), offline=offline,
                             open_relay=lambda: services.build(settings).relay)
    for level, text in lines:
        click.echo(f"{level:<5} {text}")
    click.echo({EXIT_OK: "ok", EXIT_WARN: "warnings", EXIT_ERROR: "errors"}[code])
    sys.exit(code)


COMMANDS: list[click.Command] = [check]
