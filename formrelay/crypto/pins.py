"""Keys pinned from the database: recipients with `key_source = "browser"`.

Such a recipient has no key file. Its clinician made a key in the browser (the
clinician area's reader); the store holds that key's public half, and the account's
active key is the recipient's pinned key, by its fingerprint. It goes through the same
keyring checks as a key file (`Keyring.import_recipient`: scanned, secret material
refused, the fingerprint compared, the key's usability checked). No active key yet:
the recipient's key is unusable, so its forms stay unavailable (fail closed).

The pin is read from the database whenever it is needed (a submission's encryption, a
key check), not from memory: a key change in one process is in force in every process
at once. No Flask here.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from ..settings import FormSpec, Recipient
from ..store import Store
from .keyring import CryptoError, KeyRefused, Keyring, KeyStatus

BROWSER = "browser"
NO_KEY_YET = ("no key yet: the invited clinician makes it in the clinician area "
              "(`formrelay users invite ... --recipient {rid}`)")


def browser_recipients(recipients: Mapping[str, Recipient]) -> dict[str, Recipient]:
    return {rid: r for rid, r in recipients.items() if r.key_source == BROWSER}


def file_recipients(recipients: Mapping[str, Recipient]) -> dict[str, Recipient]:
    return {rid: r for rid, r in recipients.items() if r.key_source != BROWSER}


def active_pins(store: Store, recipients: Mapping[str, Recipient]) -> dict[str, tuple[str, str]]:
    """recipient id -> (fingerprint, armoured public key) of each browser recipient that
    has an active key, from the account tied to it (the latest activated wins)."""
    browser = browser_recipients(recipients)
    if not browser:
        return {}
    pins: dict[str, tuple[str, str]] = {}
    for row in store.readers.active_keys():
        for rid in json.loads(row["recipients"]):
            if rid in browser and browser[rid].practice == row["practice"]:
                pins[rid] = (str(row["fingerprint"]), str(row["public_key"]))
    return pins


def with_readers(store: Store, recipients: Mapping[str, Recipient], spec: FormSpec) -> FormSpec:
    """The form with the readers its practice owner added or took off (clinician/
    form_readers.py) applied to the configuration's recipients. Only browser recipients
    of the form's own practice count (a reload that moved or removed one ends its row's
    effect); a reload that would leave the owner's changes with no recipient at all gives
    the configuration's recipients, never none. Read from the database each time, like
    the pins: every process encrypts to the same readers at once."""
    rows = [r for r in store.readers.of_forms(spec.practice) if r["form_id"] == spec.id]
    if not rows:
        return spec
    browser = {rid for rid, r in browser_recipients(recipients).items()
               if r.practice == spec.practice}
    changed = {str(r["recipient"]): str(r["kind"]) for r in rows if r["recipient"] in browser}
    kept = [rid for rid in spec.recipients if changed.get(rid) != "remove"]
    added = [rid for rid, kind in changed.items() if kind == "add" and rid not in kept]
    readers = kept + sorted(added)
    if not readers or readers == list(spec.recipients):
        return spec
    return dataclasses.replace(spec, recipients=readers)


def fingerprints(store: Store, recipients: Mapping[str, Recipient],
                 readers: Sequence[str]) -> list[str]:
    """The keys to encrypt to for `readers` (recipient ids, e.g. a form's as
    `with_readers` gives them), in their order: a key file's pinned fingerprint, a
    browser recipient's read from the database now, so a key change is in force at once.
    CryptoError when a browser recipient has no active key (its key was retired since
    the last check): never encrypt to fewer than the readers."""
    mine = {rid: recipients[rid] for rid in readers}
    active = active_pins(store, mine)
    missing = [rid for rid, r in mine.items() if r.key_source == BROWSER and rid not in active]
    if missing:
        raise CryptoError(NO_KEY_YET.format(rid=", ".join(missing)))
    return [active[rid][0] if rid in active else r.fingerprint for rid, r in mine.items()]


def pinned(recipient: Recipient, fingerprint: str) -> Recipient:
    return dataclasses.replace(recipient, fingerprint=fingerprint)


def import_public(keyring: Keyring, recipient: Recipient, fingerprint: str, armored: str,
                  now: datetime | None = None) -> KeyStatus:
    """Import a browser-made public key through the keyring's checks of a key file."""
    with tempfile.NamedTemporaryFile("w", suffix=".asc", dir=keyring.home,
                                     encoding="ascii") as fh:
        fh.write(armored)
        fh.flush()
        return keyring.import_recipient(pinned(recipient, fingerprint), Path(fh.name), now)


def browser_status(store: Store, keyring: Keyring, recipients: Mapping[str, Recipient],
                   now: datetime | None = None) -> dict[str, KeyStatus]:
    """The key status of every browser recipient: its pinned key imported (if it is not
    already) and checked, or unusable with the reason."""
    pins = active_pins(store, recipients)
    out: dict[str, KeyStatus] = {}
    for rid, r in browser_recipients(recipients).items():
        if rid not in pins:
            out[rid] = KeyStatus(rid, "", False, NO_KEY_YET.format(rid=rid))
            continue
        fpr, armored = pins[rid]
        st = keyring.status(pinned(r, fpr), now)
        if not st.usable and "not imported" in st.problem:
            try:
                st = import_public(keyring, r, fpr, armored, now)
            except KeyRefused as exc:
                st = KeyStatus(rid, fpr, False, str(exc).split(": ", 1)[1])
        out[rid] = st
    return out
