"""`formrelay ciphertext`: print a stored submission, still encrypted, for gpg."""

from __future__ import annotations

import sys

import click

from .common import Context, pass_ctx


@click.command()
@click.argument("reference")
@pass_ctx
def ciphertext(ctx: Context, reference: str) -> None:
    """Print the stored (encrypted) submission REFERENCE, for decryption with gpg.

    \b
    Example:
      formrelay --config config.toml ciphertext FR-7K2M-9QXD | gpg --decrypt
    """
    relay = ctx.services().relay
    try:
        relay.store.submissions.copy_to(reference.upper(), sys.stdout.buffer)
    except KeyError:
        raise click.ClickException(f"no stored ciphertext for {reference}; it may have been "
                                   "delivered and deleted already") from None


COMMANDS: list[click.Command] = [ciphertext]
