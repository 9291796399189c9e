"""Who reads which form, chosen by the practice owner on the members page.

The configuration names each form's recipients (the operator's). On top of that, a
practice owner adds a member's key to a form, or takes a reader off it: the change is
a row in the store (`form_readers`), and `crypto.pins.with_readers` applies it at every
submission, so every later submission of the form is encrypted to every reader of it,
in every process at once; the same rule gives the readers of what follows a
submission (upload links and their notices, reply keys: who may answer, batched
notices). Only the practice's browser recipients (a member's key made in the browser)
can be added or taken off; a member is added only with an active key, whose
fingerprint is audited and mailed to the operator (content-free), as a key change
is. A form is never left without a reader: that removal is refused. No Flask here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..audit_actions import AuditAction
from ..crypto import pins
from ..errors import UserError
from ..intake.relay import Relay
from ..mail.kinds import tell_operator
from ..settings import Settings
from ..store import Store
from .members import Members
from .user import User


class ReadersRefused(UserError):
    status = 400


@dataclass(frozen=True)
class Reader:
    recipient: str
    members: tuple[str, ...]  # the accounts that read with this recipient's key
    key: str  # the active key's fingerprint in groups, "" without one
    configured: bool  # named by the configuration (else added by the owner)


@dataclass(frozen=True)
class FormReaders:
    form_id: str
    title: str
    readers: tuple[Reader, ...]
    addable: tuple[Reader, ...]  # the practice's members with a key not reading it yet


class Readers:
    def __init__(self, settings: Settings, store: Store, relay: Relay, members: Members):
        self.settings = settings
        self.store = store
        self.relay = relay
        self.members = members

    def _keys(self, practice: str) -> dict[str, Reader]:
        """The practice's browser recipients, each with its members and active key."""
        by_rid: dict[str, list[str]] = {}
        keys: dict[str, str] = {}
        for row in self.store.readers.active_keys():
            if row["practice"] != practice:
                continue
            for rid in json.loads(row["recipients"]):
                keys[rid] = str(row["fingerprint"])
        for m in self.members.accounts.all():
            if m.practice == practice and not m.disabled:
                for rid in m.recipients:
                    by_rid.setdefault(rid, []).append(m.username)
        out = {}
        for rid, r in pins.browser_recipients(self.settings.recipients).items():
            if r.practice == practice:
                fpr = keys.get(rid, "")
                out[rid] = Reader(rid, tuple(by_rid.get(rid, ())),
                                  " ".join(fpr[i:i + 4] for i in range(0, len(fpr), 4)), False)
        return out

    def overview(self, owner: User) -> list[FormReaders]:
        self.members.require_owner(owner)
        keys = self._keys(owner.practice)
        out = []
        for fid in self.settings.practice_or_default(owner.practice).forms:
            spec = self.relay.form(fid)
            configured = set(self.settings.forms[fid].recipients)
            readers = tuple(Reader(rid, keys[rid].members if rid in keys else (),
                                   keys[rid].key if rid in keys else "", rid in configured)
                            for rid in spec.recipients)
            addable = tuple(k for rid, k in keys.items()
                            if rid not in spec.recipients and k.key and k.members)
            out.append(FormReaders(fid, spec.title, readers, addable))
        return out

    def _form(self, owner: User, form_id: str) -> list[str]:
        self.members.require_owner(owner)
        if form_id not in self.settings.practice_or_default(owner.practice).forms:
            raise ReadersRefused("There is no such form in your practice.")
        return list(self.relay.form(form_id).recipients)

    def add(self, owner: User, form_id: str, recipient: str, ip: str) -> None:
        """Every later submission of `form_id` is encrypted to `recipient`'s key too."""
        readers = self._form(owner, form_id)
        member = self._keys(owner.practice).get(recipient)
        if member is None or not member.members or not member.key:
            self.store.audit.append(AuditAction.FORM_READERS, "refused", actor=owner.actor, ip=ip,
                                    form_id=form_id, detail=f"{recipient}: no member with an "
                                                            "active key")
            raise ReadersRefused("%(who)s has no active key yet: the member makes it "
                                 "first, on their key page.", who=recipient)
        if recipient in readers:
            return
        configured = recipient in self.settings.forms[form_id].recipients
        self._change(owner, form_id, recipient, None if configured else "add", ip,
                     f"{', '.join(member.members)} ({recipient}) added", member.key)

    def remove(self, owner: User, form_id: str, recipient: str, ip: str) -> None:
        """Later submissions of `form_id` are no longer encrypted to `recipient`; those
        stored before stay readable by it. Refused when no reader would be left."""
        readers = self._form(owner, form_id)
        if recipient not in readers:
            return
        if recipient not in self._keys(owner.practice):
            self.store.audit.append(AuditAction.FORM_READERS, "refused", actor=owner.actor, ip=ip,
                                    form_id=form_id, detail=f"{recipient}: a key file's reader")
            raise ReadersRefused("%(who)s reads with a key file set up by your operator; "
                                 "ask them to change it.", who=recipient)
        if readers == [recipient]:
            self.store.audit.append(AuditAction.FORM_READERS, "refused", actor=owner.actor, ip=ip,
                                    form_id=form_id, detail=f"{recipient}: the form's only reader")
            raise ReadersRefused("%(who)s is the only reader of this form: add another "
                                 "reader first, or nobody could read what patients send.",
                                 who=recipient)
        configured = recipient in self.settings.forms[form_id].recipients
        self._change(owner, form_id, recipient, "remove" if configured else None, ip,
                     f"{recipient} taken off", "")

    def _change(self, owner: User, form_id: str, recipient: str, kind: str | None, ip: str,
                what: str, key: str) -> None:
        with self.store.transaction():
            self.store.readers.set_on_form(owner.practice, form_id, recipient, kind,
                                               owner.actor)
            readers = self.relay.form(form_id).recipients
            pinned = f" with key {key.replace(' ', '')}" if key else ""
            self.store.audit.append(AuditAction.FORM_READERS, actor=owner.actor, ip=ip,
                                    form_id=form_id, detail=f"{what}{pinned}; readers now "
                                                            f"{', '.join(readers)}")
            tell_operator(self.store, self.settings, f"readers of form {form_id} changed",
                          f"{owner.username}, owner of the practice, changed who reads form "
                          f"{form_id}: {what}.\n\n"
                          + (f"Key fingerprint:\n\n  {key}\n\n" if key else "")
                          + f"New submissions are now encrypted to: {', '.join(readers)}.\n"
                            "Check the fingerprint with the practice if in doubt.\n",
                          practice=self.settings.practice(owner.practice))
