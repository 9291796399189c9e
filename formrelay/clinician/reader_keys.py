"""Keys made in the clinician's browser: checked, kept locked, pinned for a recipient.

The browser (static/reader/key.js, OpenPGP.js) makes a Curve25519 key and sends three
things: the public key, the private key locked by the reading passphrase, and a second
copy locked by the recovery key of the recovery sheet. Neither secret ever reaches the
server, and this module refuses a private key that is not locked (S2K usage 0) or that
is not the same key as the public one. The public key goes through the keyring's own
checks (scanned, no secret material, fingerprint, usable for encryption).

A new key is `pending` until the clinician confirmed the recovery sheet; `activate`
makes it the pinned key of every browser recipient (`key_source = "browser"`) the
account is, retires the account's earlier key (kept: older submissions stay readable)
and queues a content-free notice to the operator. Every step is audited. No Flask here.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..audit_actions import AuditAction
from ..crypto import pins
from ..crypto.keyring import KeyRefused, Keyring
from ..crypto.packets import PacketError, secret_key_locks
from ..errors import UserError
from ..intake.relay import Relay
from ..localtime import parse_iso
from ..mail.kinds import tell_operator
from ..settings import Settings
from ..store import Store
from .login import FAILURE_WINDOW
from .user import User

MAX_KEY_CHARS = 64 * 1024
_ARMOUR = {"public": "-----BEGIN PGP PUBLIC KEY BLOCK-----",
           "private": "-----BEGIN PGP PRIVATE KEY BLOCK-----"}


class KeyUploadRefused(UserError):
    """What the browser sent cannot be a reader key; nothing was stored."""

    status = 400


class RecoveryPaused(UserError):
    """Too many recovery attempts: a pause, as for logins."""

    status = 429


@dataclass(frozen=True)
class ReaderKey:
    id: int
    fingerprint: str
    state: str  # pending | active | retired
    created_at: datetime
    locked_key: str
    recovery_locked_key: str

    @property
    def grouped(self) -> str:
        """The fingerprint in groups of four, as people read it aloud."""
        return " ".join(self.fingerprint[i:i + 4] for i in range(0, len(self.fingerprint), 4))


def _key(row: dict[str, Any]) -> ReaderKey:
    return ReaderKey(int(row["id"]), str(row["fingerprint"]), str(row["state"]),
                     parse_iso(str(row["created_at"])), str(row["locked_key"]),
                     str(row["recovery_locked_key"]))


class ReaderKeys:
    def __init__(self, settings: Settings, store: Store, keyring: Keyring, relay: Relay):
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.relay = relay

    def browser_recipients(self, user: User) -> list[str]:
        """The account's recipients whose key is made in the browser."""
        return [rid for rid in user.recipients if rid in self.settings.recipients
                and self.settings.recipients[rid].key_source == pins.BROWSER]

    def keys(self, user: User) -> list[ReaderKey]:
        return [_key(r) for r in self.store.readers.keys(user.id)]

    def active(self, user: User) -> ReaderKey | None:
        return next((k for k in self.keys(user) if k.state == "active"), None)

    def get(self, user: User, key_id: int) -> ReaderKey | None:
        return next((k for k in self.keys(user) if k.id == key_id), None)

    def readers_of(self, recipients: Iterable[str]) -> list[str]:
        """Who can read a submission encrypted to `recipients` (as recorded with it: the
        readers its form had then): each recipient, with the accounts tied to it
        ("anna (dr-jansen)"), for the inbox and "ask ..." messages."""
        users = self.store.clinicians.rows()
        out = []
        for rid in recipients:
            names = [str(u["username"]) for u in users if rid in json.loads(u["recipients"])
                     and not u["disabled_at"]]
            out.append(f"{', '.join(names)} ({rid})" if names else rid)
        return out

    # -- a new key from the browser ---------------------------------------------------
    def upload(self, user: User, fingerprint: str, public_key: str, locked_key: str,
               recovery_locked_key: str, ip: str) -> ReaderKey:
        rids = self.browser_recipients(user)
        if not rids:
            raise KeyUploadRefused("Your account reads with a key of its own (a key file), "
                                   "not with a key made in the browser. Ask your practice.")
        fpr = fingerprint.strip().upper()
        if not re.fullmatch(r"[0-9A-F]{40}", fpr):
            raise self._refused(user, ip, "fingerprint is not a v4 fingerprint")
        for text, kind in ((public_key, "public"), (locked_key, "private"),
                           (recovery_locked_key, "private")):
            if not text.lstrip().startswith(_ARMOUR[kind]) or len(text) > MAX_KEY_CHARS:
                raise self._refused(user, ip, f"not an armoured {kind} key")
        for text, which in ((locked_key, "passphrase"), (recovery_locked_key, "recovery")):
            try:
                locks = secret_key_locks(text.encode("ascii"))
            except (PacketError, UnicodeEncodeError, IndexError):
                raise self._refused(user, ip, f"{which} copy cannot be read") from None
            if not locks or 0 in locks:  # readable secret material: never store that
                raise self._refused(user, ip, f"{which} copy is not locked")
            if self._secret_fingerprint(text) != fpr:
                raise self._refused(user, ip, f"{which} copy is another key")
        recipient = self.settings.recipients[rids[0]]
        try:  # the keyring's checks of a key file: one key, no secret, fingerprint, usable
            status = pins.import_public(self.keyring, recipient, fpr, public_key)
        except KeyRefused as exc:
            raise self._refused(user, ip, str(exc).split(": ", 1)[1]) from None
        if not status.usable:
            raise self._refused(user, ip, status.problem)
        with self.store.transaction():
            key_id = self.store.readers.add_key(user.id, fpr, public_key, locked_key,
                                                recovery_locked_key)
            self.store.audit.append(AuditAction.KEY_CREATED, actor=user.actor, ip=ip,
                                    detail=f"key {fpr} made in the browser ({status.algorithm}), "
                                           "pending until the recovery sheet is confirmed")
        made = self.get(user, key_id)
        assert made is not None  # noqa: S101 - just written
        return made

    def _secret_fingerprint(self, armored: str) -> str:
        """The primary fingerprint gpg reads in a (locked) private key, without
        importing it anywhere."""
        with tempfile.NamedTemporaryFile("w", suffix=".asc", dir=self.keyring.home,
                                         encoding="ascii") as fh:
            fh.write(armored)
            fh.flush()
            scanned = self.keyring.gpg.scan_keys(fh.name)
        return str(scanned[0]["fingerprint"]) if len(scanned) == 1 else ""

    def _refused(self, user: User, ip: str, why: str,
                 action: AuditAction = AuditAction.KEY_CREATED) -> KeyUploadRefused:
        self.store.audit.append(action, "refused", actor=user.actor, ip=ip, detail=why)
        return KeyUploadRefused("The key your browser made could not be used (%(why)s). "
                                "Reload the page and try again.", why=why)

    # -- recovery: the recovery sheet's key opens the second copy -----------------------
    def recovery_copies(self, user: User, ip: str, tag: str) -> list[ReaderKey]:
        """The recovery copies, for the page to open with the recovery key. Each fetch
        counts as an attempt (the server cannot see whether it opened): past the login
        limit within the login window the copies are refused, as a login would be; a
        new passphrase set (`relock`) clears the count."""
        since = self.store.clock() - FAILURE_WINDOW
        if self.store.clinicians.login_failures(since, username=tag) >= \
                self.settings.server.login_max_failures:
            self.store.audit.append(AuditAction.KEY_RECOVERED, "refused", actor=user.actor, ip=ip,
                                    detail="too many recovery attempts: paused")
            raise RecoveryPaused("Too many attempts. Wait 15 minutes and try again.")
        self.store.clinicians.login_failure(tag, ip)
        return [k for k in self.keys(user) if k.state in ("active", "retired")]

    def relock(self, user: User, key_id: int, locked_key: str, ip: str, tag: str) -> None:
        """A new reading passphrase: the private key, opened with the recovery key and
        locked again in the browser, replaces the old locked copy."""
        key = self.get(user, key_id)
        if key is None or key.state == "pending":
            raise KeyUploadRefused("This key cannot be changed. Reload the page.")
        try:
            locks = secret_key_locks(locked_key.encode("ascii"))
        except (PacketError, UnicodeEncodeError, IndexError):
            locks = []
        if not locks or 0 in locks or self._secret_fingerprint(locked_key) != key.fingerprint:
            raise self._refused(user, ip, "new passphrase copy is not locked or another key",
                                action=AuditAction.KEY_RECOVERED)
        with self.store.transaction():
            self.store.readers.relock_key(key.id, locked_key)
            self.store.clinicians.login_failures_clear(tag)
            self.store.audit.append(AuditAction.KEY_RECOVERED, actor=user.actor, ip=ip,
                                    detail=f"key {key.fingerprint}: new reading passphrase set "
                                           "with the recovery key")

    def export_audit(self, user: User, key: ReaderKey, ip: str) -> None:
        self.store.audit.append(AuditAction.KEY_EXPORTED, actor=user.actor, ip=ip,
                                detail=f"locked key {key.fingerprint} downloaded ({key.state})")

    # -- activation: the recovery sheet is kept, the key becomes the pinned one -------
    def activate(self, user: User, key_id: int, ip: str) -> ReaderKey:
        key = self.get(user, key_id)
        if key is None or key.state != "pending":
            raise KeyUploadRefused("This key cannot be activated (it is active already, or "
                                   "not yours). Reload the page.")
        rids = self.browser_recipients(user)
        taken = {rid: row["username"] for row in self.store.readers.active_keys()
                 for rid in rids if rid in json.loads(row["recipients"])
                 and row["user_id"] != user.id}
        if taken:
            raise KeyUploadRefused("Recipient %(rid)s already reads with the key of "
                                   "%(other)s. Ask your practice.", rid=next(iter(taken)),
                                   other=next(iter(taken.values())))
        old = self.active(user)
        with self.store.transaction():
            if old is not None:
                self.store.readers.set_key_state(old.id, "retired", was="active")
            if not self.store.readers.set_key_state(key.id, "active", was="pending"):
                raise KeyUploadRefused("This key was activated meanwhile. Reload the page.")
            action = AuditAction.KEY_CHANGED if old else AuditAction.KEY_PINNED
            self.store.audit.append(action, actor=user.actor, ip=ip,
                                    detail=f"key {key.fingerprint} pinned for {', '.join(rids)}"
                                           + (f"; {old.fingerprint} retired (kept for older "
                                              "submissions)" if old else ""))
            tell_operator(self.store, self.settings,
                          f"new reader key for {', '.join(rids)}",
                          f"{user.username} made a key in the browser; it is now pinned for "
                          f"recipient(s) {', '.join(rids)}:\n\n  {key.grouped}\n\n"
                          + (f"It replaces {old.fingerprint}.\n" if old else "")
                          + "Check the fingerprint with the clinician if in doubt; "
                            "`formrelay keys list` shows it.\n",
                          practice=self.settings.practice(user.practice))
        self.relay.sync_keys()  # in force here now; other processes read the pin anew
        active = self.get(user, key.id)
        assert active is not None  # noqa: S101 - just written
        return active

