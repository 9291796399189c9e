"""In-process OpenPGP encryption of small messages (Sequoia, through PyPI `pysequoia`).

Starting gpg costs a worker far more CPU than encrypting a form's few KB (a process to
start, pipes to feed, its output to read back), so a post without files is encrypted
here, in a fraction of a millisecond. gpg stays the authority on keys: this engine never
decides whether a key may be used. It only ever holds certificates that gpg imported,
matched against their pinned fingerprint and found usable (`Keyring.status`: not
expired, revoked or too weak, with an encryption subkey), exported from gpg's keyring
right after that check. The relay admits them after each import and recheck and drops
them as soon as one refuses them (or encryption with gpg fails). Sequoia on its own would
encrypt to an expired or revoked certificate, so a certificate past the expiry gpg
reported is dropped and refused here too (fail closed), even before the next recheck.

What it writes must be what gpg writes for the same keys: the classic integrity-
protected packet, SEIPD v1 (Sequoia writes SEIPD v2 when every key advertises it, which
GnuPG 2.x cannot read). Any other packet, or any error, and the message is not used:
the caller encrypts with gpg instead. Uploads stay on gpg: Sequoia holds the GIL while it
works, which a large file must not do to a gevent worker.

No compression: pysequoia cannot write a compressed packet, so a form's mail grows
from ~3 KB (gpg, zlib) to ~20 KB, far below any mail size limit; compressing would only
save bytes on a short message and cost CPU per post.

RUST_BACKTRACE in the environment makes every Rust error capture a backtrace, which
walked off a greenlet's stack and crashed a gevent worker: the import below sets
RUST_LIB_BACKTRACE=0 (read before RUST_BACKTRACE, and only once per process) first.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .keyring import CryptoError
from .packets import SEIPD_V1, PacketError, encryption_packet

log = logging.getLogger(__name__)

# Errors must not capture Rust backtraces (see the docstring): set before the import.
os.environ["RUST_LIB_BACKTRACE"] = "0"
try:
    import pysequoia
except ImportError:  # pragma: no cover - a declared dependency; without it, gpg does all
    pysequoia = None  # type: ignore[assignment]

# Plaintext up to this size is encrypted in process; larger messages go to gpg.
MAX_BYTES = 256 * 1024


class KeyExpired(CryptoError):
    """An admitted certificate passed the expiry gpg reported: nothing is encrypted."""


@dataclass(frozen=True)
class _Admitted:
    cert: Any  # pysequoia.Cert
    until: datetime | None  # the soonest expiry of the key and its encryption subkeys


class InProcess:
    """The certificates gpg passed, by fingerprint (upper-case hex), and encryption to
    them. One per relay: a reloaded configuration starts with an empty one."""

    def __init__(self) -> None:
        self._certs: dict[str, _Admitted] = {}
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return pysequoia is not None

    def fingerprints(self) -> set[str]:
        return set(self._certs)

    def admit(self, exported: bytes, passed: dict[str, datetime | None]) -> None:
        """Hold the certificates of `exported` (gpg's export of the keys it just found
        usable) whose fingerprints are in `passed` (fingerprint -> the expiry gpg
        reported). Every other certificate held is dropped."""
        found: dict[str, _Admitted] = {}
        if self.available and exported and passed:
            try:
                certs = pysequoia.Cert.split_bytes(exported)
            except Exception as exc:  # noqa: BLE001 - any parse error: gpg does the work
                log.warning("in-process encryption off: gpg's export did not parse (%s)",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                certs = []
            for cert in certs:
                fpr = str(cert.fingerprint).upper()
                if fpr in passed:
                    found[fpr] = _Admitted(cert, passed[fpr])
        with self._lock:
            self._certs = found

    def drop(self, fingerprints: Iterable[str]) -> None:
        """Forget these certificates at once (a recheck refused them, or gpg failed)."""
        with self._lock:
            self._certs = {f: a for f, a in self._certs.items() if f not in set(fingerprints)}

    def encrypt(self, data: bytes, fingerprints: list[str], now: datetime) -> bytes | None:
        """`data` encrypted to all `fingerprints` as one ASCII-armoured SEIPD v1 message,
        or None when this engine does not take it (too large, a certificate it does not
        hold, another packet type, an error): then gpg must. Raises KeyExpired when a
        certificate held is past its expiry; it is dropped."""
        if not self.available or len(data) > MAX_BYTES or not fingerprints:
            return None
        certs = self._certs
        chosen = [certs.get(f) for f in fingerprints]
        if any(a is None for a in chosen):
            return None
        expired = [f for f, a in zip(fingerprints, chosen, strict=True)
                   if a is not None and a.until is not None and a.until <= now]
        if expired:
            self.drop(expired)
            raise KeyExpired(f"key {', '.join(expired)} expired; nothing encrypted")
        try:
            out = bytes(pysequoia.encrypt(data, recipients=[a.cert for a in chosen if a],
                                          armor=True))
        except Exception as exc:  # noqa: BLE001 - any engine failure: gpg does it instead
            log.warning("in-process encryption failed, gpg encrypts instead: %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None
        try:
            packet = encryption_packet(out)
        except PacketError:
            packet = "unreadable"
        if packet != SEIPD_V1:
            log.warning("in-process encryption wrote %s, not %s: gpg encrypts instead",
                        packet, SEIPD_V1)
            return None
        return out
