"""Whether each recipient's key file is the key its configuration pins.

A reload (reload.py) and `formrelay check --config-only` refuse a configuration whose
key file cannot be read, is not an OpenPGP public key, holds secret material or another
key than the pinned fingerprint - naming the file and table that configure it and the
path that was read. Only the packets are read (packets.key_fingerprints), no gpg run:
a reload with hundreds of practices stays cheap; gpg checks the key itself (expiry,
revocation, strength) when the keyring imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import KeyFileProblem
from ..settings import Recipient, Settings
from .packets import PacketError, key_fingerprints


def check_key_files(settings: Settings) -> None:
    """Every recipient's key file is readable and holds exactly its pinned public key,
    no secret: read from the packets (no gpg run), so a reload with hundreds of
    practices stays cheap; gpg checks the key itself when it imports it."""
    for r in settings.recipients.values():
        if r.key_source != "file":  # a browser-made key has no file: pinned when made
            continue
        path = settings.resolve(r.key_file)
        where = f"{r.source or f'{settings.path}: recipients.{r.id}'}.key_file"
        fix = ("put the clinician's exported public key there, or correct key_file (a "
               "relative path starts from the folder of the file that names it)")
        try:
            found, secret = key_fingerprints(path.read_bytes())
        except FileNotFoundError:
            raise KeyFileProblem(f"{where}: {path} not found; {fix}{_moved(settings, r)}"
                                 ) from None
        except OSError as exc:
            raise KeyFileProblem(f"{where}: {path} cannot be read ({exc.strerror or exc}); "
                                 f"give the service user read access, or {fix}") from None
        except PacketError as exc:
            raise KeyFileProblem(f"{where}: {path} is not an OpenPGP public key ({exc}); "
                                 f"{fix}") from None
        if secret:
            raise KeyFileProblem(f"{where}: {path} contains SECRET key material; never put "
                                 "a private key on the server - delete that file and export "
                                 "only the public key")
        if found != [r.fingerprint]:
            holds = ", ".join(found) or "no public key"
            raise KeyFileProblem(f"{where}: {path} holds {holds} but the config pins "
                                 f"{r.fingerprint}; export only the clinician's key, and "
                                 "check the fingerprint with the clinician by phone")


def _moved(settings: Settings, r: Recipient) -> str:
    """A hint when the key is where a relative key_file of a practice file was looked
    for before it was read from that file's own folder: next to config.toml."""
    source = Path(r.source.rsplit(": ", 1)[0]) if r.source else settings.path
    try:
        relative = Path(r.key_file).relative_to(source.parent)
    except ValueError:
        return ""
    old = (settings.path.parent / relative).resolve()
    if source == settings.path or not old.is_file():
        return ""
    return (f" (the file is at {old}: a relative key_file is read from the folder of "
            f"{source.name}; write key_file = \"{os.path.relpath(old, source.parent)}\" "
            "or an absolute path)")
