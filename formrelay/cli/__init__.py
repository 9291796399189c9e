"""The `formrelay` command (also `python -m formrelay`): the group, and the commands of
each module of this package, one per noun (check, keys, users, audit, ...).

Every command takes `--config` (or FORMRELAY_CONFIG). Errors are turned into the
command's answer in one place, `common.Commands.invoke`: any `FormrelayError`
(errors.py) is one line, "Error: " and its message (a configuration problem names the
file, the key and the fix), with its exit code (1) and no traceback. `check` reports a
broken configuration as one of its own lines instead, with exit code 2.
"""

from __future__ import annotations

import click

from .. import __version__
from ..settings import CONFIG_ENV
from . import audit, backup, check, ciphertext, delivery, demo, keys, purge, serve, uploads, users
from .common import Commands, Context


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", metavar="FILE", help=f"Config file (default: ${CONFIG_ENV}).")
@click.version_option(__version__, prog_name="formrelay")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """formrelay: encrypted intake and contact forms for care practices.

    \b
    Examples:
      formrelay demo
      formrelay --config /etc/formrelay/config.toml check
      formrelay --config config.toml serve --bind 127.0.0.1:8000
    """
    ctx.obj = Context(config)


for _module in (check, backup, keys, ciphertext, serve, demo, delivery, users, audit, purge,
                uploads):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="formrelay")


__all__ = ["cli", "main"]

if __name__ == "__main__":
    main()
