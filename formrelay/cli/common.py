"""What every command module shares: the exit codes, the error-to-answer group
(`Commands`) and the context that turns --config into settings and services.

Errors become the command's answer in one place, `Commands.invoke`: any `FormrelayError`
(errors.py) is one line, "Error: " and its message (a configuration problem names the
file, the key and the fix), with its exit code (1) and no traceback.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from ..config import ConfigError, load_config
from ..errors import FormrelayError, OperatorError, UserError
from ..settings import CONFIG_ENV, Settings

if TYPE_CHECKING:
    from ..services import Services

# for monitoring: ok, warnings, errors (`check`, `keys check`, `outbox`, `audit verify`)
EXIT_OK, EXIT_WARN, EXIT_ERROR = 0, 1, 2


def one_line(exc: FormrelayError) -> str:
    text = exc.english() if isinstance(exc, UserError) else str(exc)
    return " ".join(text.splitlines())


class Commands(click.Group):
    """The command group every formrelay command runs in (sub-groups included): the
    one place where an error becomes the CLI's answer."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FormrelayError as exc:
            click.ClickException(one_line(exc)).show()  # "Error: ..." on stderr
            ctx.exit(exc.exit_code if isinstance(exc, OperatorError) else 1)


class Context:
    def __init__(self, config: str | None):
        self.config_path = config

    def settings(self) -> Settings:
        path = self.config_path or os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
        return load_config(path, os.environ)

    def serving_settings(self) -> Settings:
        """The settings a serving process (serve, worker) starts with: the files as they
        are, or the last good configuration while they are broken (reload.py)."""
        from ..reload import serving_settings

        path = self.config_path or os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
        return serving_settings(path, os.environ)

    def services(self) -> Services:
        """The store, keyring, relay etc. of the configured data folder (services.py)."""
        from ..services import build

        return build(self.settings())


pass_ctx = click.make_pass_decorator(Context)


__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_WARN",
    "Commands",
    "Context",
    "one_line",
    "pass_ctx",
]
