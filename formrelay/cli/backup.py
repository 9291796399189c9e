"""`formrelay backup`: an online copy of the SQLite database (ops/backup.py)."""

from __future__ import annotations

import click

from .common import Context, pass_ctx


@click.command()
@click.argument("dest", type=click.Path())
@pass_ctx
def backup(ctx: Context, dest: str) -> None:
    """Copy the database to DEST (a file, or a folder for a dated file) while the service
    keeps running, using SQLite's online backup API. The copy holds ciphertext and
    metadata only; it is checked, then written with mode 0600. Restore: stop the service,
    put the file in the data folder as formrelay.db (remove formrelay.db-wal and -shm),
    start, run `formrelay check`. With server.database_url (PostgreSQL) it refuses:
    back that up with pg_dump.

    \b
    Example:
      formrelay --config config.toml backup /var/backups/formrelay/
    """
    from ..ops.backup import run_backup

    path, counts = run_backup(ctx.settings(), dest)
    click.echo(f"backup {path}: {counts['bytes']} bytes, {counts['submissions']} submissions "
               f"({counts['ciphertexts']} still encrypted in it), {counts['audit_events']} "
               "audit events")


COMMANDS: list[click.Command] = [backup]
