"""Invitations: a one-time, expiring link instead of a password handed over by phone.

`formrelay users invite` makes the account (with a random password nobody knows, so it
cannot log in yet) and mails the clinician a link. The link's secret exists only in the
link: the database keeps its hash, and the queued mail keeps the link sealed with a key
derived from FORMRELAY_SECRET_KEY until the relay accepted it (then the outbox drops the
payload). Opening the link, the clinician chooses a password; then the usual first login
follows (authenticator app, recovery codes). A link works once; an expired, used,
unknown or withdrawn one (account disabled, practice removed by a reload) is refused
with a clear page, and every use and refusal is audited. No Flask here.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..audit_actions import AuditAction
from ..crypto import sealing
from ..errors import UserError
from ..i18n import gettext
from ..localtime import iso, local_date, parse_iso
from ..mail.kinds import BuildError, MailKind, plain_message
from ..mail.transport import transport_configured
from ..settings import Settings
from ..store import OutboxMail, Store
from .accounts import AccountError, Accounts
from .user import OPERATOR, User, sha256

KIND = "invitation"
# a reader opens what is encrypted to them; an assistant sees the list and triages only
# an owner is a reader who also sees and invites the practice's members (members.py)
ROLES = ("reader", "assistant", "owner")
DEFAULT_DAYS, MAX_DAYS = 7, 30
_PURPOSE = b"formrelay invitation link"


class InvitationRefused(UserError):
    """The link cannot be used; the message tells the clinician what to do."""

    status = 410


@dataclass(frozen=True)
class Invited:
    user: User
    link: str
    expires_at: datetime
    mailed: bool


def invitation_path(token: str) -> str:
    return f"/clinician/invite/{token}"


class Invitations:
    def __init__(self, settings: Settings, store: Store, accounts: Accounts):
        self.settings = settings
        self.store = store
        self.accounts = accounts

    # -- the operator's side ----------------------------------------------------------
    def invite(self, username: str, *, email: str, practice: str = "",
               recipients: list[str] | tuple[str, ...] = (),
               forms: list[str] | tuple[str, ...] = (), days: int = DEFAULT_DAYS,
               role: str = "reader", actor: str = OPERATOR) -> Invited:
        """Make the account and mail it a link; for an existing account that has not
        logged in yet, a new link (the old ones stop working)."""
        if "@" not in email:
            raise AccountError(f"{email!r} is not an e-mail address: the invitation is "
                               "mailed, so --email is needed")
        if role not in ROLES:
            raise AccountError(f"unknown role {role!r}; use one of: {', '.join(ROLES)}")
        if not 1 <= days <= MAX_DAYS:
            raise AccountError(f"an invitation is valid 1 to {MAX_DAYS} days, not {days}")
        user = self.accounts.get(username)
        if user is None:
            # a random password nobody is told: the account cannot log in before the link
            user = self.accounts.add(username, secrets.token_urlsafe(32), email=email,
                                     recipients=recipients, forms=forms, practice=practice)
        elif user.enrolled or user.last_login_at:
            raise AccountError(f"user {user.username!r} has logged in already; use "
                               "`formrelay users reset` for a lost password")
        token = secrets.token_urlsafe(32)
        expires = self.store.clock() + timedelta(days=days)
        link = self.settings.server.base_url.rstrip("/") + invitation_path(token)
        mailed = transport_configured(self.settings)
        with self.store.transaction():
            ended = self.store.readers.end_invitations(user.id)
            self.store.readers.set_role(user.id, role)
            self.store.readers.add_invitation(user.id, sha256(token), expires)
            if mailed:
                sealed = sealing.seal_text(self.settings.secret_key, _PURPOSE, link,
                                           user.username.encode())
                payload = {"user": user.username, "link": sealed, "expires_at": iso(expires)}
                self.store.outbox.enqueue(KIND, "", [email], payload=json.dumps(payload).encode(),
                                          practice=user.practice)
            self.store.audit.append(
                AuditAction.USER_INVITED, actor=actor, practice=user.practice,
                detail=f"{user.actor} ({role}): invitation valid until {iso(expires)}"
                       f"{', mailed' if mailed else ', NOT mailed (no [smtp])'}"
                       + (f"; {ended} earlier link(s) withdrawn" if ended else ""))
        return Invited(self.accounts.require(user.username), link, expires, mailed)

    # -- the clinician's side ---------------------------------------------------------
    def check(self, token: str, ip: str) -> User:
        """The invited user if the link can be used now; InvitationRefused (audited)
        otherwise. Does not use the link up."""
        user, _ = self._open(token, ip)
        return user

    def accept(self, token: str, password: str, ip: str) -> User:
        """Use the link once: set the chosen password (AccountError if it breaks the
        rules, and the link stays usable)."""
        user, invitation_id = self._open(token, ip)
        self.accounts.check_password_rules(password, user.username)
        with self.store.transaction():
            if not self.store.readers.use_invitation(invitation_id):
                raise self._refuse(user, ip, "used before")
            self.accounts.set_password(user, password)
            self.store.audit.append(AuditAction.INVITATION, actor=user.actor, ip=ip,
                                    practice=user.practice, detail="link used; password chosen")
        return self.accounts.require(user.username)

    def _open(self, token: str, ip: str) -> tuple[User, int]:
        row = self.store.readers.invitation(sha256(token)) if 20 <= len(token) <= 100 else None
        user = self.accounts.by_id(int(row["user_id"])) if row else None
        if row is None or user is None:
            raise self._refuse(None, ip, "unknown link")
        if row["used_at"]:
            raise self._refuse(user, ip, "used before")
        if parse_iso(str(row["expires_at"])) <= self.store.clock():
            raise self._refuse(user, ip, f"expired on {row['expires_at']}")
        if user.disabled:
            raise self._refuse(user, ip, "account disabled")
        if self.settings.practice(user.practice) is None:
            raise self._refuse(user, ip, f"practice {user.practice} no longer configured")
        return user, int(row["id"])

    def _refuse(self, user: User | None, ip: str, why: str) -> InvitationRefused:
        self.store.audit.append(AuditAction.INVITATION, "refused", actor=user.actor if user else
                                "unknown", ip=ip, detail=why,
                                **({"practice": user.practice} if user else {}))
        gone = why in ("unknown link", "used before") or why.startswith("expired")
        return InvitationRefused(
            "This invitation link has expired or was used already. Ask your practice for "
            "a new invitation." if gone else
            "This invitation was withdrawn. Ask your practice what to do.")


# -- the mail ---------------------------------------------------------------------------
def _body(settings: Settings, practice: str, link: str, expires: datetime,
          lang: str) -> tuple[str, str]:
    p = settings.practice_or_default(practice)

    def t(msg: str, **params: object) -> str:
        return gettext(lang, msg, **params)

    subject = t("%(practice)s: your invitation to the clinician area", practice=p.name)
    lines = [t("You are invited to read the forms of %(practice)s in its clinician area. "
               "Open this link to choose your password and set up your account:",
               practice=p.name), "", link, "",
             t("The link works once and until %(date)s. If you did not expect this mail, "
               "ignore it and tell the practice.", date=local_date(expires, p.timezone)),
             "", t("This mail holds no answers and no patient details. It was sent "
                   "automatically by formrelay.")]
    return subject, "\n".join(lines) + "\n"


def build(mail: OutboxMail, settings: Settings, store: Store) -> bytes:
    data = json.loads(mail.payload)
    try:
        link = sealing.unseal_text(settings.secret_key, _PURPOSE, data["link"],
                                   str(data["user"]).encode())
    except sealing.Unsealable:
        raise BuildError("the invitation link cannot be opened (FORMRELAY_SECRET_KEY "
                         "changed?): send a new invitation") from None
    subject, body = _body(settings, mail.practice, link, parse_iso(data["expires_at"]), "nl")
    return plain_message(mail, settings, subject, body,
                         sender=settings.practice_or_default(mail.practice).sender)


MAIL = MailKind(KIND, build)  # in the worker's table: services.mail_kinds()
