"""`formrelay audit`: export a submission's or a practice's audit history, verify the
hash chains (NEN 7513; ops/audit.py).
"""

from __future__ import annotations

import sys

import click

from .common import EXIT_ERROR, EXIT_OK, Context, pass_ctx


@click.group()
def audit() -> None:
    """The audit log (NEN 7513): export one submission's history, verify the chain.

    \b
    Examples:
      formrelay --config config.toml audit export --reference FR-7K2M-9QXD
      formrelay --config config.toml audit export --practice oost
      formrelay --config config.toml audit verify
      formrelay --config config.toml audit verify --practice oost

    Each practice has its own hash chain; without --practice, every practice's. An
    event goes to the chain of its form's practice (a clinician's own events: their
    account's practice; the operator's and the system's: default).
    """


PRACTICE_HELP = "Only this practice's events and chain (its id); default: every practice."


@audit.command("export")
@click.option("--reference", default=None,
              help="The submission's reference, FR-....; without it, --practice's whole log.")
@click.option("--practice", default=None, metavar="ID", help=PRACTICE_HELP)
@pass_ctx
def audit_export(ctx: Context, reference: str | None, practice: str | None) -> None:
    """Print the history of one submission in readable form: received, mailed or held,
    downloaded, deleted; when, by whom, from where, with what outcome. With --practice
    and no --reference: every event of that practice's chain (tab-separated), none of
    another practice's.

    \b
    Examples:
      formrelay --config config.toml audit export --reference FR-7K2M-9QXD > history.txt
      formrelay --config config.toml audit export --practice oost > oost-audit.tsv
    """
    from ..ops.audit import export_practice, export_text

    if not reference and not practice:
        raise click.UsageError("name a submission (--reference FR-...) or a practice "
                               "(--practice ID)")
    store = ctx.services().store
    if reference:
        click.echo(export_text(store, reference, practice), nl=False)
        return
    assert practice is not None  # noqa: S101 - checked above
    if practice not in store.audit.practices():
        click.echo(f"error: no audit chain for practice {practice!r}; practices with one: "
                   f"{', '.join(store.audit.practices())}", err=True)
        sys.exit(EXIT_ERROR)
    for line in export_practice(store, practice):
        click.echo(line)


@audit.command("verify")
@click.option("--practice", default=None, metavar="ID", help=PRACTICE_HELP)
@pass_ctx
def audit_verify(ctx: Context, practice: str | None) -> None:
    """Check that no audit row was changed, inserted or deleted; exit 0 ok, 2 not.
    Each practice's chain is checked on its own and its head printed.

    \b
    Example:
      formrelay --config config.toml audit verify
      formrelay --config config.toml audit verify --practice oost
    """
    from ..ops.audit import verify_chain

    store = ctx.services().store
    names = [practice] if practice else store.audit.practices()
    if practice and practice not in store.audit.practices():
        click.echo(f"error: no audit chain for practice {practice!r}; practices with one: "
                   f"{', '.join(store.audit.practices())}", err=True)
        sys.exit(EXIT_ERROR)
    ok = True
    for name in names:
        result = verify_chain(store, record=True, practice=name)
        ok = ok and result.ok
        label = "" if len(names) == 1 else f"practice {name}: "
        for problem in result.problems:
            click.echo(f"PROBLEM {label}{problem}", err=True)
        click.echo(f"{label}{result.rows} rows checked (#{result.first_id or '-'} to "
                   f"#{result.head_id}); head {result.head_hash}")
    click.echo("ok: the audit log is intact" if ok else
               "FAILED: the audit log was tampered with or damaged")
    sys.exit(EXIT_OK if ok else EXIT_ERROR)


COMMANDS: list[click.Command] = [audit]
