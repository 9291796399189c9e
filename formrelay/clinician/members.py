"""A practice owner's view of the practice's members, and invitations from the browser.

An owner (`formrelay users invite ... --role owner`) sees every account of their own
practice: its role, the forms it sees and whether it has a reading key; and invites
readers (tied to one of the practice's browser recipients) and assistants (tied to one
of its forms). The invitation is the operator's (invitations.py), made with the owner as
the audit actor; an owner cannot make owners, nor reach another practice. Which forms go
to which recipients stays in the configuration (the operator's). No Flask here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..crypto import pins
from ..errors import UserError
from ..settings import Settings
from ..store import Store
from .accounts import AccountError, Accounts
from .invitations import Invitations, Invited
from .reader_keys import ReaderKeys
from .user import User

OWNER = "owner"


class NotOwner(UserError):
    status = 403


@dataclass(frozen=True)
class Member:
    username: str
    role: str
    forms: tuple[str, ...]
    recipients: tuple[str, ...]
    key: str  # the active key's fingerprint in groups, "" without one
    disabled: bool


class Members:
    def __init__(self, settings: Settings, store: Store, accounts: Accounts,
                 invitations: Invitations, reader_keys: ReaderKeys):
        self.settings = settings
        self.store = store
        self.accounts = accounts
        self.invitations = invitations
        self.reader_keys = reader_keys

    def is_owner(self, user: User) -> bool:
        return self.store.readers.role_of(user.id) == OWNER

    def require_owner(self, user: User) -> None:
        if not self.is_owner(user):
            raise NotOwner("Only the practice owner manages its members.")

    def overview(self, owner: User) -> list[Member]:
        self.require_owner(owner)
        out = []
        for u in self.accounts.all():
            if u.practice != owner.practice:
                continue
            key = self.reader_keys.active(u)
            out.append(Member(u.username, self.store.readers.role_of(u.id),
                              tuple(self.accounts.forms_of(u)), u.recipients,
                              key.grouped if key else "", u.disabled))
        return out

    def choices(self, owner: User) -> tuple[list[str], list[str]]:
        """(the practice's browser recipients, its forms): what an invitation may name."""
        practice = self.settings.practice_or_default(owner.practice)
        browser = [rid for rid in practice.recipients
                   if self.settings.recipients[rid].key_source == pins.BROWSER]
        return browser, list(practice.forms)

    def invite(self, owner: User, username: str, email: str, role: str,
               link: str) -> Invited:
        """A reader tied to recipient `link`, or an assistant tied to form `link`."""
        self.require_owner(owner)
        recipients, forms = self.choices(owner)
        if role == "reader" and link in recipients:
            return self.invitations.invite(username, email=email, practice=owner.practice,
                                           recipients=[link], role=role, actor=owner.actor)
        if role == "assistant" and link in forms:
            return self.invitations.invite(username, email=email, practice=owner.practice,
                                           forms=[link], role=role, actor=owner.actor)
        raise AccountError("a reader is tied to one of the practice's browser recipients, "
                           "an assistant to one of its forms")
