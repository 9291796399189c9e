"""`formrelay keys`: import, list and check the recipients' pinned public keys."""

from __future__ import annotations

import sys

import click

from ..crypto.keyring import KeyRefused
from .common import EXIT_ERROR, EXIT_OK, EXIT_WARN, Context, pass_ctx


@click.group()
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
    relay = ctx.services().relay
    settings = relay.settings
    ids = [recipient] if recipient else list(settings.recipients)
    failed = False
    for rid in ids:
        r = settings.recipients.get(rid)
        if r is None:
            raise click.ClickException(f"unknown recipient {rid!r}; configured: "
                                       f"{', '.join(settings.recipients) or 'none'}")
        try:
            st = relay.sync_keys()[rid] if r.key_source == "browser" else \
                relay.keyring.import_recipient(r, settings.resolve(r.key_file))
        except KeyRefused as exc:
            click.echo(f"REFUSED {exc}", err=True)
            failed = True
            continue
        click.echo(f"imported {st.line()}")
        failed |= not st.usable
    sys.exit(EXIT_ERROR if failed else EXIT_OK)


@keys.command("list")
@pass_ctx
def keys_list(ctx: Context) -> None:
    """List each recipient's pinned key: fingerprint, user ids, algorithm, expiry.

    \b
    Example:
      formrelay --config config.toml keys list
    """
    relay = ctx.services().relay
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
    relay = ctx.services().relay
    code = EXIT_OK
    for st in relay.sync_keys().values():
        click.echo(st.line())
        if not st.usable:
            code = EXIT_ERROR
        elif st.warning and code == EXIT_OK:
            code = EXIT_WARN
    sys.exit(code)


COMMANDS: list[click.Command] = [keys]
