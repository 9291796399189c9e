"""OpenPGP for formrelay: a private keyring of pinned recipient keys, key checks, encryption.

Everything goes through python-gnupg with the choices design.md records: keys are only
ever addressed by their full pinned fingerprint (gpg matches names by substring), key
files are scanned before import and secret material is refused, trust is `always` for
the pinned keys, and ciphertext is the classic integrity-protected packet (SEIPD v1)
that every OpenPGP client reads. No Flask here: the CLI, the worker and tests use it.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import gnupg

from .config import Recipient

log = logging.getLogger(__name__)

EXPIRY_WARNING_DAYS = 30
# OpenPGP public-key algorithm ids whose strength depends on the key length.
_LENGTH_BOUND_ALGOS = {"1": "RSA", "2": "RSA", "3": "RSA", "16": "ElGamal", "17": "DSA"}
_MIN_BITS = 2048
_INVALID = set("erdin")  # gpg validity letters: expired, revoked, disabled, invalid, never

# Options for every gpg call. --no-random-seed-file: concurrent gpg processes otherwise
# queue on the seed-file lock. --rfc4880 keeps GnuPG 2.4 from writing its OCB packets
# (which Sequoia, PGPainless, OpenKeychain cannot read) to keys that advertise AEAD.
# --no-autostart: public-key work needs no gpg-agent, so none is left running per home.
_GPG_OPTIONS = ["--no-random-seed-file", "--no-greeting", "--no-auto-key-retrieve",
                "--no-auto-key-locate", "--no-emit-version", "--no-comments", "--no-autostart"]
# Never --throw-keyids: RNP (Thunderbird) cannot find its key in such a message.
_ENCRYPT_ARGS = ["--rfc4880", "--trust-model", "always", "--personal-compress-preferences",
                 "ZLIB ZIP Uncompressed"]


class CryptoError(Exception):
    """gpg could not do what was asked; the message is safe to log (no content)."""


class KeyRefused(CryptoError):
    """A recipient's key file cannot be used; the message names recipient and fix."""


@dataclass(frozen=True)
class KeyStatus:
    recipient: str
    fingerprint: str
    usable: bool
    problem: str = ""
    expires: datetime | None = None
    warning: str = ""
    uids: tuple[str, ...] = ()
    algorithm: str = ""

    def line(self) -> str:
        """One line for `formrelay check` / `keys check`."""
        state = "ok" if self.usable else "REFUSED"
        text = f"{self.recipient} {self.fingerprint}: {state}"
        if self.problem:
            text += f" - {self.problem}"
        elif self.expires:
            text += f", expires {self.expires:%Y-%m-%d}"
        if self.warning:
            text += f" - {self.warning}"
        return text


def _ts(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


class Keyring:
    """The GnuPG home inside the data folder, holding only the pinned public keys."""

    def __init__(self, home: Path, gpg_binary: str = "gpg"):
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        self.home = home
        if not shutil.which(gpg_binary):
            raise CryptoError(f"{gpg_binary} not found: install GnuPG (apt-get install gnupg)")
        # python-gnupg binds subprocess.Popen when it is imported. `formrelay serve`
        # imports it before gunicorn's gevent worker patches subprocess, and the Popen
        # bound then can no longer start a process: use the one in force now.
        gnupg.Popen = subprocess.Popen
        self.gpg = gnupg.GPG(gpgbinary=gpg_binary, gnupghome=str(home), options=_GPG_OPTIONS)
        # python-gnupg defaults to latin-1 for gpg's text output; uids are UTF-8.
        self.gpg.encoding = "utf-8"
        self._lock = threading.Lock()

    # -- importing --------------------------------------------------------------------
    def import_recipient(self, recipient: Recipient, key_path: Path,
                         now: datetime | None = None) -> KeyStatus:
        """Scan `key_path`, refuse what cannot be used, import the pinned key, check it."""
        rid, fpr = recipient.id, recipient.fingerprint
        fix = f"export the public key of {rid} again and run `formrelay keys import`"
        if not key_path.is_file():
            raise KeyRefused(f"{rid}: key file {key_path} not found; {fix}")
        scanned = self.gpg.scan_keys(str(key_path))
        if not scanned:
            raise KeyRefused(f"{rid}: {key_path} holds no OpenPGP key; {fix}")
        if any(k["type"] == "sec" for k in scanned):
            raise KeyRefused(
                f"{rid}: {key_path} contains SECRET key material; never put a private key on "
                f"the server - delete that file and export only the public key"
            )
        found = [k["fingerprint"] for k in scanned]
        if fpr not in found:
            raise KeyRefused(
                f"{rid}: fingerprint mismatch - the file holds {', '.join(found)} but the "
                f"config pins {fpr}; check the fingerprint with the clinician by phone"
            )
        if len(found) > 1:
            raise KeyRefused(f"{rid}: {key_path} holds {len(found)} keys; export only the "
                             f"clinician's key ({fpr})")
        with self._lock:
            result = self.gpg.import_keys(key_path.read_bytes())
        if not result.fingerprints and not result.unchanged:
            raise KeyRefused(f"{rid}: gpg could not import {key_path}: {_gpg_reason(result)}")
        return self.status(recipient, now)

    # -- checking ---------------------------------------------------------------------
    def status(self, recipient: Recipient, now: datetime | None = None) -> KeyStatus:
        """The state of a recipient's pinned key at `now` (default: the current time)."""
        now = now or datetime.now(UTC)
        rid, fpr = recipient.id, recipient.fingerprint
        keys = [k for k in self.gpg.list_keys(keys=[fpr]) if k["fingerprint"] == fpr]
        renew = f"ask the clinician for a renewed key and run `formrelay keys import {rid}`"
        if not keys:
            return KeyStatus(rid, fpr, False, f"key not imported; run `formrelay keys import "
                                              f"{rid}`")
        key = keys[0]
        uids = tuple(key.get("uids", ()))
        algo = _algo_name(key)
        expires = _ts(key.get("expires", ""))

        def refused(problem: str) -> KeyStatus:
            return KeyStatus(rid, fpr, False, problem, expires, uids=uids, algorithm=algo)

        if key.get("trust") == "r":
            return refused(f"key is REVOKED; {renew}")
        if key.get("trust") == "e" or (expires and expires <= now):
            when = f" on {expires:%Y-%m-%d}" if expires else ""
            return refused(f"key expired{when}; {renew}")
        if key.get("algo") in _LENGTH_BOUND_ALGOS and int(key.get("length") or 0) < _MIN_BITS:
            return refused(f"{algo} key of {key['length']} bits is too weak (2048 at least); "
                           f"ask the clinician for a new key")
        enc = _encryption_keys(key, now)
        if not enc:
            return refused(f"no usable encryption subkey; {renew}")
        weak = [s for s in enc if s["algo"] in _LENGTH_BOUND_ALGOS
                and int(s.get("length") or 0) < _MIN_BITS]
        if len(weak) == len(enc):
            return refused(f"encryption subkey of {weak[0]['length']} bits is too weak "
                           f"(2048 at least); ask the clinician for a new key")
        ends = [e for e in [expires, *(_ts(s.get("expires", "")) for s in enc)] if e]
        soonest = min(ends) if ends else None
        warning = ""
        if soonest and soonest - now <= timedelta(days=EXPIRY_WARNING_DAYS):
            days = max(0, (soonest - now).days)
            warning = f"expires in {days} days ({soonest:%Y-%m-%d}); {renew}"
        return KeyStatus(rid, fpr, True, "", soonest, warning, uids, algo)

    def check_all(self, recipients: Iterable[Recipient],
                  now: datetime | None = None) -> dict[str, KeyStatus]:
        return {r.id: self.status(r, now) for r in recipients}

    def sync(self, recipients: Mapping[str, Recipient], resolve: Any,
             now: datetime | None = None) -> dict[str, KeyStatus]:
        """Import every recipient's key file; a refused key becomes an unusable status."""
        out: dict[str, KeyStatus] = {}
        for rid, r in recipients.items():
            try:
                out[rid] = self.import_recipient(r, resolve(r.key_file), now)
            except KeyRefused as exc:
                out[rid] = KeyStatus(rid, r.fingerprint, False, str(exc).split(": ", 1)[1])
        return out

    # -- encrypting -------------------------------------------------------------------
    def encrypt_stream(self, source: IO[bytes], fingerprints: list[str], output: Path,
                       *, compress: bool = True) -> int:
        """Encrypt the byte stream `source` to all `fingerprints` in one ASCII-armoured
        message written to `output`; returns its size. The plaintext only passes
        through gpg's stdin pipe, never a file."""
        if not fingerprints:
            raise CryptoError("no recipients to encrypt to")
        args = [*_ENCRYPT_ARGS, "--compress-algo", "zlib" if compress else "none"]
        result = self.gpg.encrypt_file(source, recipients=list(fingerprints), always_trust=True,
                                       armor=True, output=str(output), extra_args=args)
        if not result.ok or not output.exists() or output.stat().st_size == 0:
            output.unlink(missing_ok=True)
            raise CryptoError(f"gpg encryption failed: {_gpg_reason(result)}")
        return output.stat().st_size

    def encrypt_bytes(self, data: bytes, fingerprints: list[str], output: Path) -> int:
        return self.encrypt_stream(io.BytesIO(data), fingerprints, output)


def _encryption_keys(key: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    usable = []
    candidates = list(key.get("subkey_info", {}).values())
    if "e" in key.get("cap", "").replace("E", ""):  # the primary itself may encrypt
        candidates.append(key)
    for sub in candidates:
        if "e" not in sub.get("cap", ""):
            continue
        if sub.get("trust") in _INVALID and sub.get("trust") not in ("n",):
            continue
        ends = _ts(sub.get("expires", ""))
        if ends and ends <= now:
            continue
        usable.append(sub)
    return usable


def _algo_name(key: dict[str, Any]) -> str:
    algo = key.get("algo", "")
    if key.get("curve"):
        return str(key["curve"])
    name = _LENGTH_BOUND_ALGOS.get(algo, f"algo {algo}")
    return f"{name}{key.get('length', '')}"


def _gpg_reason(result: Any) -> str:
    """gpg's own reason, from its status lines (they never contain the plaintext)."""
    status = getattr(result, "status", "") or ""
    stderr = getattr(result, "stderr", "") or ""
    reasons = [ln.split("] ", 1)[-1] for ln in stderr.splitlines()
               if ln.startswith("[GNUPG:] INV_RECP") or ln.startswith("[GNUPG:] FAILURE")]
    return status or "; ".join(reasons) or "unknown error"
