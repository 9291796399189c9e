"""`formrelay users`: clinician accounts for the clinician area (password + TOTP).

Account changes made here are audited with the actor "operator"; passwords are typed at
a hidden prompt (never on the command line, where `ps` and the shell history would see
them) or generated and printed once. An `AccountError` (a user name, password or address
that cannot be used) is one line and exit code 1, like every other error (common.py).
"""

from __future__ import annotations

import secrets

import click

from ..clinician.accounts import Accounts
from ..clinician.invitations import DEFAULT_DAYS, MAX_DAYS, ROLES
from ..localtime import utc_shown
from .common import Context, pass_ctx


def _accounts(ctx: Context) -> Accounts:
    return ctx.services().accounts


def _password(generate: bool) -> tuple[str, bool]:
    if generate:
        return "-".join(secrets.token_urlsafe(6) for _ in range(3)), True
    return click.prompt("Password (at least 12 characters)", hide_input=True,
                        confirmation_prompt=True), False


@click.group()
def users() -> None:
    """Clinician accounts for the clinician area (password + TOTP).

    \b
    Examples:
      formrelay --config config.toml users add anna --recipient dr-jansen
      formrelay --config config.toml users list
    """


@users.command("add")
@click.argument("username")
@click.option("--recipient", "recipients", multiple=True, metavar="ID",
              help="A [recipients.<id>] this user is; sees the forms sent to it. Repeatable.")
@click.option("--form", "forms", multiple=True, metavar="ID",
              help="A form whose held submissions this user sees. Repeatable.")
@click.option("--email", default="", help="The user's address (for the .eml's To header).")
@click.option("--practice", default="", metavar="ID",
              help="The practice the user belongs to (a [practices.<id>]); default: the "
                   "default practice. Recipients and forms must be that practice's.")
@click.option("--generate-password", is_flag=True,
              help="Make a strong password and print it once, instead of asking.")
@pass_ctx
def users_add(ctx: Context, username: str, recipients: tuple[str, ...], forms: tuple[str, ...],
              email: str, practice: str, generate_password: bool) -> None:
    """Create USERNAME, tied to recipients and/or forms of one practice. The user sees
    that practice's submissions only. The TOTP app is set up at the first login, in the
    browser.

    \b
    Example:
      formrelay --config config.toml users add anna --recipient dr-jansen --form intake
      formrelay --config config.toml users add bram --practice noord --recipient dr-bakker
    """
    accounts = _accounts(ctx)
    password, generated = _password(generate_password)
    user = accounts.add(username, password, email=email, recipients=list(recipients),
                        forms=list(forms), practice=practice)
    click.echo(f"created {user.username} in practice {user.practice}; sees forms: "
               f"{', '.join(accounts.forms_of(user)) or 'none'}")
    if generated:
        click.echo(f"password (shown once, hand it over in person or by phone): {password}")
    click.echo(f"first login: {ctx.settings().server.base_url.rstrip('/')}/clinician/ "
               "(sets up the authenticator app)")


@users.command("invite")
@click.argument("username")
@click.option("--email", required=True, help="Where the invitation link is mailed.")
@click.option("--recipient", "recipients", multiple=True, metavar="ID",
              help="A [recipients.<id>] this user is; sees the forms sent to it. Repeatable.")
@click.option("--form", "forms", multiple=True, metavar="ID",
              help="A form whose held submissions this user sees. Repeatable.")
@click.option("--practice", default="", metavar="ID",
              help="The practice the user belongs to; default: the default practice.")
@click.option("--days", default=DEFAULT_DAYS, show_default=True,
              help=f"How long the link works (1-{MAX_DAYS} days).")
@click.option("--role", type=click.Choice(ROLES), default="reader", show_default=True,
              help="reader: opens what is encrypted to them. assistant: sees the list of "
                   "their --form(s), notes who handles each and marks them processed, never "
                   "opens or downloads one. owner: a reader who also sees the practice's "
                   "members and invites readers and assistants in the browser.")
@pass_ctx
def users_invite(ctx: Context, username: str, email: str, recipients: tuple[str, ...],
                 forms: tuple[str, ...], practice: str, days: int, role: str) -> None:
    """Create USERNAME and mail them a one-time invitation link (no password by phone).

    Opening the link, the clinician chooses a password and sets up the authenticator
    app. The link works once and expires; run this again for a new link (the old one
    stops working). The mail holds no patient data and goes through the TLS-only outbox.

    \b
    Example:
      formrelay --config config.toml users invite anna --email anna@praktijk.nl \\
        --recipient dr-jansen
    """
    invited = ctx.services().invitations.invite(
        username, email=email, practice=practice, recipients=list(recipients),
        forms=list(forms), days=days, role=role)
    until = utc_shown(invited.expires_at)
    if invited.mailed:
        click.echo(f"invited {invited.user.username} (practice {invited.user.practice}): "
                   f"the link is queued for {email}, valid until {until}")
    else:
        click.echo(f"invited {invited.user.username}, but no mail can be sent ([smtp] is not "
                   f"set up); hand over this link in person, valid until {until}:")
        click.echo(invited.link)


@users.command("list")
@pass_ctx
def users_list(ctx: Context) -> None:
    """List the accounts: forms they see, state, last login.

    \b
    Example:
      formrelay --config config.toml users list
    """
    accounts = _accounts(ctx)
    for u in accounts.all():
        state = "disabled" if u.disabled else "active" if u.enrolled else "TOTP not set up yet"
        last = utc_shown(u.last_login_at) if u.last_login_at else "never"
        click.echo(f"{u.username:<20} {state:<20} last login {last}")
        role = accounts.store.readers.role_of(u.id)
        click.echo(f"  practice {u.practice}; recipients {', '.join(u.recipients) or '-'}; forms "
                   f"{', '.join(accounts.forms_of(u)) or 'none'}"
                   + (f"; {u.email}" if u.email else "") + ("" if role == "reader" else
                                                           f"; role {role}"))


@users.command("reset")
@click.argument("username")
@click.option("--generate-password", is_flag=True,
              help="Make a strong password and print it once, instead of asking.")
@pass_ctx
def users_reset(ctx: Context, username: str, generate_password: bool) -> None:
    """Give USERNAME a new password and a new TOTP setup at the next login (a lost
    phone, a leaked password); ends their sessions and revokes their API tokens.

    \b
    Example:
      formrelay --config config.toml users reset anna --generate-password
    """
    accounts = _accounts(ctx)
    accounts.require(username)
    password, generated = _password(generate_password)
    user = accounts.reset(username, password)
    click.echo(f"reset {user.username}: sets up the authenticator app again at next login")
    if generated:
        click.echo(f"password (shown once): {password}")


def _set_disabled(ctx: Context, username: str, disabled: bool) -> None:
    _accounts(ctx).set_disabled(username, disabled)
    click.echo(f"{'disabled' if disabled else 'enabled'} {username}")


@users.command("disable")
@click.argument("username")
@pass_ctx
def users_disable(ctx: Context, username: str) -> None:
    """Stop USERNAME from logging in or using API tokens; ends their sessions.

    \b
    Example:
      formrelay --config config.toml users disable anna
    """
    _set_disabled(ctx, username, True)


@users.command("enable")
@click.argument("username")
@pass_ctx
def users_enable(ctx: Context, username: str) -> None:
    """Let a disabled USERNAME log in again.

    \b
    Example:
      formrelay --config config.toml users enable anna
    """
    _set_disabled(ctx, username, False)


@users.command("remove")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def users_remove(ctx: Context, username: str, yes: bool) -> None:
    """Delete USERNAME with their sessions, recovery codes and API tokens (the audit
    log keeps what they did).

    \b
    Example:
      formrelay --config config.toml users remove anna --yes
    """
    accounts = _accounts(ctx)
    accounts.require(username)
    if not yes:
        click.confirm(f"Remove {username}?", abort=True)
    accounts.remove(username)
    click.echo(f"removed {username}")


COMMANDS: list[click.Command] = [users]
