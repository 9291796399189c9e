"""OpenPGP for formrelay: a private keyring of pinned recipient keys, key checks, encryption.

Everything goes through python-gnupg with the choices design.md records: keys are only
ever addressed by their full pinned fingerprint (gpg matches names by substring), key
files are scanned before import and secret material is refused, trust is `always` for
the pinned keys, and ciphertext is the classic integrity-protected packet (SEIPD v1)
that every OpenPGP client reads. Every gpg run has a time limit (a stuck gpg must not
hold a request forever). No Flask here: the CLI, the worker and tests use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import gnupg

from ..errors import OperatorError
from ..settings import Recipient
from .spawn import spawn

log = logging.getLogger(__name__)

EXPIRY_WARNING_DAYS = 30
# How long `Keyring.sync` trusts an import of an unchanged key file (see there).
SYNC_REUSE_SECONDS = 60
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
# --lock-never: encrypting only reads the keyring, and gpg's lock file would be the one
# thing it writes in the home per message (on a full disk: "can't allocate lock").
# Imports keep gpg's locking; they replace pubring.kbx by rename, so readers are safe.
_ENCRYPT_ARGS = ["--rfc4880", "--trust-model", "always", "--personal-compress-preferences",
                 "ZLIB ZIP Uncompressed", "--lock-never"]
# Less free space than this where gpg's output failed: the disk was the reason.
_DISK_FULL_BYTES = 1 << 20


class CryptoError(OperatorError):
    """gpg could not do what was asked; the message is safe to log (no content)."""


class KeyRefused(CryptoError):
    """A recipient's key file cannot be used; the message names recipient and fix."""


class GpgTimeout(CryptoError):
    """gpg did not finish in time and was killed: gpg itself is stuck, not one key."""


class _TimedGPG(gnupg.GPG):
    """python-gnupg, with every gpg run killed after `timeout` seconds.

    python-gnupg waits for gpg without a limit (its reader threads join until gpg closes
    its output), so a hung gpg would hold a request thread forever. Each run starts in a
    process group of its own, and a timer kills that whole group: a gpg stuck before
    reading, after reading all its input, or one that left a child holding the pipes.
    Then the readers see end-of-file and the call returns (or raises the broken pipe its
    writer thread met); `timed_out()` tells, for the calling thread's last run."""

    def __init__(self, *args: Any, timeout: float, **kwargs: Any):
        self.timeout = timeout
        self._last = threading.local()
        try:
            super().__init__(*args, **kwargs)  # runs gpg already (--list-config)
        except ValueError:
            if self.timed_out():
                raise _timeout_error("starting", timeout, kwargs.get("gnupghome")) from None
            raise

    def timed_out(self) -> bool:
        return bool(getattr(self._last, "timed_out", False))

    def _open_subprocess(self, args: list[str], passphrase: bool = False) -> Any:
        cmd = self.make_args(args, passphrase)
        # Not python-gnupg's Popen: under gevent that forked the whole worker in Python
        # for every gpg run (crypto/spawn.py).
        process = spawn(cmd, self.env)
        fired = threading.Event()

        def kill() -> None:
            if process.returncode is None:
                fired.set()
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        timer = threading.Timer(self.timeout, kill)
        timer.daemon = True
        timer.start()
        self._last.timed_out = False
        process.formrelay_watch = (timer, fired)
        return process

    def _collect_output(self, process: Any, result: Any, writer: Any = None,
                        stdin: Any = None) -> Any:
        timer, fired = process.formrelay_watch
        try:
            return super()._collect_output(process, result, writer, stdin)
        finally:
            timer.cancel()
            self._last.timed_out = fired.is_set()


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
        text = f"{self.recipient} {self.fingerprint}".rstrip() + f": {state}"
        if self.problem:
            text += f" - {self.problem}"
        elif self.expires:
            text += f", expires {self.expires:%Y-%m-%d}"
        if self.warning:
            text += f" - {self.warning}"
        return text


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed key file: its inode, size and modification time."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _ts(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


class Keyring:
    """The GnuPG home inside the data folder, holding only the pinned public keys."""

    def __init__(self, home: Path, gpg_binary: str = "gpg", *, timeout: float = 30):
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        self.home = home
        self.timeout = timeout
        self._private()
        if not shutil.which(gpg_binary):
            raise CryptoError(f"{gpg_binary} not found: install GnuPG (apt-get install gnupg)")
        self.gpg = _TimedGPG(gpgbinary=gpg_binary, gnupghome=str(home), options=_GPG_OPTIONS,
                             timeout=timeout)
        # python-gnupg defaults to latin-1 for gpg's text output; uids are UTF-8.
        self.gpg.encoding = "utf-8"
        self._lock = threading.Lock()
        # (recipient, fingerprint, key file) -> (the file's stamp, when, its status) of
        # the last import by `sync`: see there.
        self._synced: dict[tuple[str, str, str], tuple[tuple[int, int, int], float,
                                                        KeyStatus]] = {}
        # (recipient, fingerprint, key file) whose file this keyring read and imported,
        # matching the pinned fingerprint. The keyring is shared: another recipient's
        # key with the same fingerprint is in it too, so finding the key is not enough
        # for a recipient whose own file was refused (`check_all`).
        self._imported: set[tuple[str, str, str]] = set()

    # -- importing --------------------------------------------------------------------
    def import_recipient(self, recipient: Recipient, key_path: Path,
                         now: datetime | None = None) -> KeyStatus:
        """Scan `key_path`, refuse what cannot be used, import the pinned key, check it."""
        slot = (recipient.id, recipient.fingerprint, str(key_path))
        self._imported.discard(slot)  # usable again only once this file was read and matched
        status = self._import(recipient, key_path, now)
        self._imported.add(slot)
        return status

    def _import(self, recipient: Recipient, key_path: Path, now: datetime | None) -> KeyStatus:
        rid, fpr = recipient.id, recipient.fingerprint
        fix = f"export the public key of {rid} again and run `formrelay keys import`"
        if not key_path.is_file():
            named = f" (key_file of {recipient.source})" if recipient.source else ""
            raise KeyRefused(f"{rid}: key file {key_path}{named} not found; put the "
                             "clinician's exported public key there, or correct key_file (a "
                             "relative path starts from the folder of the file that names it)")
        scanned = self.gpg.scan_keys(str(key_path))
        self.check_timeout(f"reading {key_path}")
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
        with self._lock, self._across_processes():
            result = self.gpg.import_keys(key_path.read_bytes())
            self._private()
        self.check_timeout(f"importing the key of {rid}")
        if not result.fingerprints and not result.unchanged:
            raise KeyRefused(f"{rid}: gpg could not import {key_path}: {_gpg_reason(result)}")
        return self.status(recipient, now)

    @contextlib.contextmanager
    def _across_processes(self) -> Iterator[None]:
        """One import at a time in this GnuPG home, across processes: two workers that
        reload at once and both import a new key made gpg fail one of them ("unknown
        error" on the keybox), and that worker then refused the form until its next key
        check. Imports are rare (a reload, `keys import`), so the wait is short."""
        with open(self.home / ".formrelay-import.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _private(self) -> None:
        """gpg makes its files (pubring.kbx...) with the umask's mode, often 0644: make
        them 0600 and folders 0700, so only the service user reads the keyring."""
        for folder, dirs, files in os.walk(self.home):
            for name in dirs:
                _tighten(Path(folder) / name, 0o700)
            for name in files:
                _tighten(Path(folder) / name, 0o600)

    # -- checking ---------------------------------------------------------------------
    def status(self, recipient: Recipient, now: datetime | None = None) -> KeyStatus:
        """The state of a recipient's pinned key at `now` (default: the current time)."""
        now = now or datetime.now(UTC)
        rid, fpr = recipient.id, recipient.fingerprint
        listed = self.gpg.list_keys(keys=[fpr])
        self.check_timeout(f"checking the key of {rid}")  # not "key not imported"
        keys = [k for k in listed if k["fingerprint"] == fpr]
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

    def check_all(self, recipients: Iterable[Recipient], now: datetime | None = None, *,
                  resolve: Any = Path) -> dict[str, KeyStatus]:
        """The state of each recipient's key; usable only once its own configured key
        file (`resolve(key_file)`) was imported into this keyring and matched its pinned
        fingerprint. A recipient whose file was refused is tried again here (a fixed
        file is taken without a reload), never looked up by fingerprint alone."""
        out = {}
        for r in recipients:
            path = resolve(r.key_file)
            if (r.id, r.fingerprint, str(path)) in self._imported:
                out[r.id] = self.status(r, now)
                continue
            try:
                out[r.id] = self.import_recipient(r, path, now)
            except KeyRefused as exc:
                out[r.id] = KeyStatus(r.id, r.fingerprint, False, str(exc).split(": ", 1)[1])
        return out

    def sync(self, recipients: Mapping[str, Recipient], resolve: Any,
             now: datetime | None = None) -> dict[str, KeyStatus]:
        """Import every recipient's key file; a refused key becomes an unusable status.

        A key file this keyring imported less than SYNC_REUSE_SECONDS ago and that has
        not changed since (same inode, size and modification time) is not read again:
        its status from that import stands. A config reload with hundreds of practices
        then costs a stat per key instead of three gpg runs, while a replaced key file
        is imported (and checked against its pinned fingerprint) at once."""
        out: dict[str, KeyStatus] = {}
        for rid, r in recipients.items():
            path = resolve(r.key_file)
            stamp, slot = _stamp(path), (rid, r.fingerprint, str(path))
            seen = self._synced.get(slot)
            if seen and stamp and seen[0] == stamp \
                    and time.monotonic() - seen[1] < SYNC_REUSE_SECONDS:
                out[rid] = seen[2]
                continue
            try:
                out[rid] = self.import_recipient(r, path, now)
            except KeyRefused as exc:
                out[rid] = KeyStatus(rid, r.fingerprint, False, str(exc).split(": ", 1)[1])
                self._synced.pop(slot, None)
                continue
            if stamp:
                self._synced[slot] = (stamp, time.monotonic(), out[rid])
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
        try:
            result = self.gpg.encrypt_file(source, recipients=list(fingerprints),
                                           always_trust=True, armor=True, output=str(output),
                                           extra_args=args)
        except OSError as exc:  # the pipe broke: gpg died, or was killed, while reading
            output.unlink(missing_ok=True)
            self.check_timeout("encrypting")
            raise CryptoError(f"gpg encryption failed: {exc.strerror or exc}") from None
        if self.gpg.timed_out():
            output.unlink(missing_ok=True)
            self.check_timeout("encrypting")
        # gpg says "encryption ok" even when writing the output failed (disk full) and
        # leaves a truncated file: only its exit code tells.
        if not result.ok or result.returncode != 0 or not output.exists() \
                or output.stat().st_size == 0:
            full = _no_space(output.parent)  # before the partial output frees its space
            output.unlink(missing_ok=True)
            if full:
                raise OSError(errno.ENOSPC, f"no space left for gpg's output in {output.parent}")
            raise CryptoError(f"gpg encryption failed: {_gpg_reason(result)}")
        return output.stat().st_size

    def export_public(self, fingerprints: list[str]) -> bytes:
        """The public keys of `fingerprints` as gpg holds them now (binary), for the
        in-process engine (crypto/inprocess.py) to take only what gpg just checked."""
        data = self.gpg.export_keys(list(fingerprints), armor=False)
        self.check_timeout("exporting keys")
        return data if isinstance(data, bytes) else b""

    def encrypt_bytes(self, data: bytes, fingerprints: list[str], output: Path) -> int:
        return self.encrypt_stream(io.BytesIO(data), fingerprints, output)

    def check_timeout(self, doing: str) -> None:
        """Raise GpgTimeout if this thread's last gpg run was stopped for taking too long."""
        if self.gpg.timed_out():
            raise _timeout_error(doing, self.timeout, self.home)


def _timeout_error(doing: str, timeout: float, home: object) -> GpgTimeout:
    return GpgTimeout(f"gpg did not finish {doing} within {timeout:g} s and was stopped; "
                      f"check that `gpg --version` answers on this host and that nothing "
                      f"holds a lock in {home}")


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and (st.st_mode & 0o777) != mode:
            os.chmod(path, mode)
    except OSError:
        pass  # gone meanwhile (gpg's temp files), or not ours: `formrelay check` warns


def _no_space(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    free = st.f_bavail if os.geteuid() else st.f_bfree  # root may use the reserved blocks
    return free * st.f_frsize < _DISK_FULL_BYTES


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
