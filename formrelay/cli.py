"""The `formrelay` command (also `python -m formrelay`).

Every command takes `--config` (or FORMRELAY_CONFIG); a configuration problem is
reported as one line naming the file, the key and the fix, with exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import CONFIG_ENV, ConfigError, Settings, load_config
from .crypto import CryptoError, KeyRefused
from .store import StoreError

EXIT_OK, EXIT_WARN, EXIT_ERROR = 0, 1, 2


class Context:
    def __init__(self, config: str | None):
        self.config_path = config

    def settings(self) -> Settings:
        path = self.config_path or os.environ.get(CONFIG_ENV)
        if not path:
            raise click.ClickException(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
        try:
            return load_config(path, os.environ)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None

    def relay(self) -> Any:
        from .relay import Relay

        try:
            return Relay(self.settings())
        except (StoreError, CryptoError) as exc:
            raise click.ClickException(str(exc)) from None


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


ClickException = click.ClickException


def _exit(code: int) -> None:
    sys.exit(code)


# -- check ------------------------------------------------------------------------------
@cli.command()
@pass_ctx
def check(ctx: Context) -> None:
    """Check config, data folder and every recipient key; exit 0 ok, 1 warning, 2 error.

    \b
    Example:
      formrelay --config config.toml check
    """
    from .checks import run_checks

    lines, code = run_checks(ctx.settings())
    for level, text in lines:
        click.echo(f"{level:<5} {text}")
    click.echo({EXIT_OK: "ok", EXIT_WARN: "warnings", EXIT_ERROR: "errors"}[code])
    _exit(code)


# -- keys -------------------------------------------------------------------------------
@cli.group()
def keys() -> None:
    """Import, list and check the clinicians' public keys.

    \b
    Examples:
      formrelay --config config.toml keys import
      formrelay --config config.toml keys list
      formrelay --config config.toml keys check
    """


@keys.command("import")
@click.argument("recipient", required=False)
@pass_ctx
def keys_import(ctx: Context, recipient: str | None) -> None:
    """Import the key file of RECIPIENT (default: all) after checking it.

    \b
    Example:
      formrelay --config config.toml keys import dr-jansen
    """
    relay = ctx.relay()
    settings = relay.settings
    ids = [recipient] if recipient else list(settings.recipients)
    failed = False
    for rid in ids:
        r = settings.recipients.get(rid)
        if r is None:
            raise click.ClickException(f"unknown recipient {rid!r}; configured: "
                                       f"{', '.join(settings.recipients) or 'none'}")
        try:
            st = relay.keyring.import_recipient(r, settings.resolve(r.key_file))
        except KeyRefused as exc:
            click.echo(f"REFUSED {exc}", err=True)
            failed = True
            continue
        click.echo(f"imported {st.line()}")
        failed |= not st.usable
    _exit(EXIT_ERROR if failed else EXIT_OK)


@keys.command("list")
@pass_ctx
def keys_list(ctx: Context) -> None:
    """List each recipient's pinned key: fingerprint, user ids, algorithm, expiry.

    \b
    Example:
      formrelay --config config.toml keys list
    """
    relay = ctx.relay()
    for rid, st in relay.sync_keys().items():
        r = relay.settings.recipients[rid]
        click.echo(f"{rid} <{r.email}>")
        click.echo(f"  fingerprint {st.fingerprint}")
        for uid in st.uids:
            click.echo(f"  uid         {uid}")
        if st.algorithm:
            click.echo(f"  algorithm   {st.algorithm}")
        exp = f"{st.expires:%Y-%m-%d}" if st.expires else "never"
        click.echo(f"  expires     {exp}")
        click.echo(f"  state       {'usable' if st.usable else 'REFUSED: ' + st.problem}")


@keys.command("check")
@pass_ctx
def keys_check(ctx: Context) -> None:
    """Re-read and check every key file; exit 0 ok, 1 expiring within 30 days, 2 unusable.

    \b
    Example:
      formrelay --config config.toml keys check
    """
    relay = ctx.relay()
    code = EXIT_OK
    for st in relay.sync_keys().values():
        click.echo(st.line())
        if not st.usable:
            code = EXIT_ERROR
        elif st.warning and code == EXIT_OK:
            code = EXIT_WARN
    _exit(code)


# -- ciphertext -------------------------------------------------------------------------
@cli.command()
@click.argument("reference")
@pass_ctx
def ciphertext(ctx: Context, reference: str) -> None:
    """Print the stored (encrypted) submission REFERENCE, for decryption with gpg.

    \b
    Example:
      formrelay --config config.toml ciphertext FR-7K2M-9QXD | gpg --decrypt
    """
    relay = ctx.relay()
    try:
        relay.store.copy_ciphertext(reference.upper(), sys.stdout.buffer)
    except KeyError:
        raise click.ClickException(f"no stored ciphertext for {reference}; it may have been "
                                   "delivered and deleted already") from None


# -- serve ------------------------------------------------------------------------------
@cli.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address:port.")
@click.option("--workers", default=2, show_default=True, help="Gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, help="Threads per worker.")
@pass_ctx
def serve(ctx: Context, bind: str, workers: int, threads: int) -> None:
    """Run the web service under gunicorn.

    \b
    Example:
      formrelay --config config.toml serve --bind 127.0.0.1:8000 --workers 2
    """
    settings = ctx.settings()
    from .server import run_gunicorn

    run_gunicorn(settings, bind=bind, workers=workers, threads=threads)


# -- demo -------------------------------------------------------------------------------
@cli.command()
@click.option("--dir", "folder", default="demo", show_default=True, type=click.Path(),
              help="Folder for the throw-away key, config, data and mail.")
@click.option("--port", default=8000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--no-serve", is_flag=True, help="Only prepare the folder, print, and exit.")
def demo(folder: str, port: int, no_serve: bool) -> None:
    """Run everything locally: a throw-away clinician key, a demo config, the service
    on 127.0.0.1 and mail written to a folder; prints the URLs to open.

    \b
    Example:
      formrelay demo --port 8000
    """
    from .demo import prepare_demo, run_demo

    try:
        info = prepare_demo(Path(folder), port)
    except (ConfigError, CryptoError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in info.lines:
        click.echo(line)
    if not no_serve:
        run_demo(info)


def main() -> None:
    cli(prog_name="formrelay")


if __name__ == "__main__":
    main()
