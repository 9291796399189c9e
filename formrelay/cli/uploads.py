"""`formrelay uploads`: ask a patient for documents by sending a one-time upload link.

Registered on the main group by cli/__init__.py. The link itself is never printed (it
holds the secret that lets its holder send documents to the practice): it goes only
into the mail, through the TLS-only outbox. What is printed is the reference the
documents will arrive under and the link's expiry.
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import UserError
from ..localtime import utc_shown
from ..uploads.links import MAX_NOTE, UploadLinks
from .common import Context, pass_ctx


@click.group()
def uploads() -> None:
    """Ask patients for documents (photos, letters, videos) by a one-time upload link.

    \b
    Example:
      formrelay uploads invite --reference FR-7KQ2-M9XA --email patient@example.nl
    """


@uploads.command()
@click.option("--reference", metavar="FR-...", help="The submission the documents belong to "
              "(the link encrypts to its form's recipients).")
@click.option("--practice", metavar="ID", help="For a patient without a submission: the "
              "practice whose recipients receive the documents (a new reference is made).")
@click.option("--email", required=True, help="The patient's e-mail address.")
@click.option("--lang", type=click.Choice(["nl", "en"]), default="nl", show_default=True,
              help="Language of the mail and the upload page.")
@click.option("--note", default="", metavar="TEXT", help="A short note to the patient (one "
              f"line, at most {MAX_NOTE} characters), shown on the upload page and in the "
              "mail. Not for health data: the mail is not encrypted.")
@pass_ctx
def invite(ctx: Context, reference: str | None, practice: str | None, email: str,
           lang: str, note: str) -> None:
    """Mail a patient a one-time link to upload documents.

    \b
    Examples:
      formrelay uploads invite --reference FR-7KQ2-M9XA --email patient@example.nl
      formrelay uploads invite --practice noord --email patient@example.nl
      formrelay uploads invite --reference FR-7KQ2-M9XA --email patient@example.nl \
        --note "Please send the letter from the dermatologist."
    """
    if bool(reference) == bool(practice):
        raise click.UsageError("give either --reference or --practice")
    services = ctx.services()
    links = UploadLinks(services.settings, services.store, services.clock)
    try:
        if reference:
            made = links.for_submission(reference, email, lang, actor="operator", note=note)
        else:
            made = links.for_practice(practice or "", email, lang, actor="operator",
                                      note=note)
    except UserError as exc:
        if exc.errors:  # a field message: the address
            raise UserError(" ".join(m for ms in exc.errors.values() for m in ms)) from None
        raise
    finally:
        services.close()
    click.echo(f"Upload link queued for the patient: reference {made.reference}, "
               f"works until {utc_shown(made.expires_at)}.")
    click.echo("The delivery worker sends it (`formrelay worker`); `formrelay outbox` "
               "shows it waiting.")


COMMANDS: list[Any] = [uploads]
