"""Receiving documents through an upload link: chunks of ciphertext in, whole files out
(no Flask).

Two ways in, one storage:

* **In the browser** (static/upload.js): the patient's browser encrypts each file with
  the vendored OpenPGP.js to the link's pinned recipient keys (served with the page) and
  sends the ciphertext in chunks of 1 MB, a small protocol in the spirit of tus's core
  (create, then PATCH at an `Upload-Offset`, HEAD to ask where to resume, a SHA-256 per
  chunk like tus's checksum extension). The server never sees a byte in clear: it checks
  that the first chunk is an OpenPGP message whose session-key packets name exactly the
  link's recipients and whose encrypted data is SEIPD v1, that every chunk arrives whole
  at the offset where the file ends, and that the chunks add up to the length the
  browser declares at the end. The file's type cannot be checked here (the bytes are
  encrypted): the page checks the first bytes before encrypting, and the clinician's
  decryption is where a file shows what it is.
* **The plain form post** (no JavaScript, small files up to server.max_request_mb): the
  request keeps the file in memory (web/request.py), its type is checked by its first
  bytes, and gpg encrypts it to the same recipients; only the ciphertext is stored.

Each chunk is one transaction that checks the offset and the session's size limit, so
an upload may move between requests, connections and app instances (the database is
the only state), resume after a dropped connection or a `kill -9`, and never pass the
practice's limit. A refused file's partial data is deleted and the refusal audited. New
data is refused with 503 while the data folder would drop below server.upload_reserve_mb.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from ..audit_actions import AuditAction
from ..crypto.keyring import Keyring
from ..crypto.packets import PacketError, encryption_packet, pkesk_key_ids
from ..errors import UserError
from ..intake.forms import sniff_upload
from ..localtime import iso
from ..settings import UPLOAD_TYPES, Settings
from ..store import CHUNK, Store
from .links import UploadLink, UploadLinks, b64e, link_recipients

MAX_CHUNK = 4 * CHUNK  # the browser sends 1 MB; a little room, never a whole file
# files one session may start, refused ones included: each is a row and an audit entry,
# so a link's holder cannot start empty files in a loop
MAX_FILES = 100
FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # b64e of 16 random bytes; nothing else is looked up
DEFAULT_TYPES = ("pdf", "jpg", "jpeg", "png", "heic", "docx", "odt", "txt")


class UploadRefused(UserError):
    """A file (or a chunk of it) is refused; `status` and the message say why. The
    file's partial data is gone by the time this is raised."""


class TooManyFiles(UploadRefused):
    """The session started MAX_FILES files already (429, not audited: a loop of these
    must not fill the audit log either)."""

    status = 429


class UploadUnavailable(UserError):
    """The data folder is short of its reserve: 'call the practice' (503)."""

    status = 503


class OffsetMismatch(UserError):
    """The chunk does not start where the file ends: `offset` is where it does."""

    status = 409

    def __init__(self, offset: int):
        super().__init__("Upload offset does not match; resume at %(offset)s.", offset=offset)
        self.offset = offset


@dataclass(frozen=True)
class Received:
    file_id: str
    size: int


class Receiver:
    def __init__(self, settings: Settings, store: Store, keyring: Keyring,
                 clock: Callable[[], datetime]):
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.clock = clock
        self.links = UploadLinks(settings, store, clock)

    # -- what a link accepts -------------------------------------------------------------
    def allowed_types(self, link: UploadLink) -> list[str]:
        """The extensions a link accepts: its form's file fields', else the usual
        document and photo types."""
        spec = self.settings.form(link.form_id) if link.form_id else None
        found = sorted({a for f in (spec.fields if spec else ()) if f.type == "file"
                        for a in f.upload_types if a in UPLOAD_TYPES})
        return found or list(DEFAULT_TYPES)

    def left(self, link: UploadLink) -> int:
        row = self.store.uploads.link(link.id) or {"used_bytes": 0}
        return max(0, self.links.limit_bytes(link.practice) - int(row["used_bytes"]))

    def check_reserve(self, incoming: int = 0) -> None:
        """UploadUnavailable when writing `incoming` bytes would leave the data folder
        with less free space than server.upload_reserve_mb."""
        reserve = self.settings.server.upload_reserve_mb * 1024 * 1024
        free = shutil.disk_usage(self.settings.data_dir).free
        if free - incoming < reserve:
            raise UploadUnavailable("The practice cannot receive documents right now.")

    def public_keys(self, link: UploadLink) -> list[str]:
        """The armoured public keys of the link's recipients, for the browser to encrypt
        to; UploadUnavailable when one is not usable (fail closed)."""
        by_fpr = link_recipients(self.settings, self.store, link)
        out = []
        for fpr in link.recipients:
            r = by_fpr.get(fpr)
            if r is None or not self.keyring.status(r).usable:
                raise UploadUnavailable("The practice cannot receive documents right now.")
            armored = str(self.keyring.gpg.export_keys(fpr))
            if "BEGIN PGP PUBLIC KEY BLOCK" not in armored:
                raise UploadUnavailable("The practice cannot receive documents right now.")
            out.append(armored)
        return out

    def _key_ids(self, link: UploadLink) -> list[set[str]]:
        """Per recipient, the key IDs of its primary key and subkeys."""
        out = []
        for key in self.keyring.gpg.list_keys(keys=list(link.recipients)):
            ids = {str(key["keyid"]).upper()}
            ids |= {str(s[0]).upper() for s in key.get("subkeys", [])}
            out.append(ids)
        return out

    # -- the browser's chunks ---------------------------------------------------------
    def start(self, link: UploadLink, size: int, how: str = "browser", ip: str = "") -> str:
        """A new file in the link's session; `size` is what the browser announces (the
        plaintext's size: the ciphertext is a little larger)."""
        if size < 0:
            raise UploadRefused("The file size is missing.")
        if self.store.uploads.count_files(link.id) >= MAX_FILES:
            raise TooManyFiles("This upload session cannot take more files. Call the "
                               "practice if you need to send more.")
        if size > self.left(link):
            self._refused(link, "", ip, f"announced {size} bytes, over the session's limit")
            raise UploadRefused("This file is larger than the practice accepts (%(mb)s MB "
                                "per upload session).", status=413,
                                mb=self.links.limit_bytes(link.practice) // (1024 * 1024))
        self.check_reserve(size)
        file_id = b64e(secrets.token_bytes(16))
        with self.store.transaction():
            self.store.uploads.add_file({
                "id": file_id, "link_id": link.id, "practice": link.practice,
                "reference": link.reference, "recipients": list(link.recipients),
                "recipient_ids": list(link.recipient_ids), "how": how,
                "created_at": iso(self.clock())})
            self.store.uploads.start_session(link.id, self.clock())
            self.store.audit.append(AuditAction.UPLOAD_STARTED, actor="patient", ip=ip,
                                    reference=link.reference, form_id=link.form_id,
                                    practice=link.practice, detail=f"file {file_id[:8]} ({how})")
        return file_id

    def _file(self, link: UploadLink, file_id: str) -> dict[str, object]:
        row = self.store.uploads.file(file_id) if FILE_ID.fullmatch(file_id) else None
        if row is None or row["link_id"] != link.id or row["state"] != "receiving":
            raise UploadRefused("This upload is not (or no longer) open.", status=404)
        return row

    def offset(self, link: UploadLink, file_id: str) -> int:
        return int(self._file(link, file_id)["size"])  # type: ignore[call-overload]

    def append(self, link: UploadLink, file_id: str, offset: int, data: bytes,
               checksum: str = "", ip: str = "", *, made_here: bool = False) -> int:
        """Store one chunk at `offset`; returns the file's new size. `made_here`: gpg
        wrote it on this server (the form post), so its first chunk needs no check."""
        self._file(link, file_id)
        if not data or len(data) > MAX_CHUNK:
            raise UploadRefused("A chunk must hold 1 byte to %(mb)s MB.", status=413,
                                mb=MAX_CHUNK // CHUNK)
        if checksum and not hmac.compare_digest(checksum.lower().encode("utf-8"),
                                                hashlib.sha256(data).hexdigest().encode()):
            # damaged on the way: the browser sends this chunk again
            raise UploadRefused("This chunk arrived damaged; send it again.", status=460)
        if offset == 0 and not made_here:
            self._check_message(link, file_id, data, ip)
        self.check_reserve(len(data))
        outcome, value = self.store.uploads.append_chunk(
            file_id, offset, data, self.links.limit_bytes(link.practice))
        if outcome == "offset":
            raise OffsetMismatch(value)
        if outcome == "limit":
            self._drop(link, file_id, ip, "over the session's size limit")
            raise UploadRefused("This file is larger than the practice accepts (%(mb)s MB "
                                "per upload session).", status=413,
                                mb=self.links.limit_bytes(link.practice) // (1024 * 1024))
        if outcome == "gone":
            raise UploadRefused("This upload is not (or no longer) open.", status=404)
        return value

    def _check_message(self, link: UploadLink, file_id: str, head: bytes, ip: str) -> None:
        """The first chunk must start an OpenPGP message to exactly the link's
        recipients, with SEIPD v1 encrypted data: anything else is not what the page
        sends, and is refused before it is stored."""
        try:
            ok = encryption_packet(head) == "SEIPD v1"
            named = set(pkesk_key_ids(head))
        except (PacketError, IndexError):
            ok, named = False, set()
        per_recipient = self._key_ids(link)
        if ok and named and len(per_recipient) == len(link.recipients):
            ok = all(ids & named for ids in per_recipient) and \
                named <= set().union(*per_recipient)
        else:
            ok = False
        if not ok:
            self._drop(link, file_id, ip, "not an OpenPGP message to the link's recipients")
            raise UploadRefused("This upload is not encrypted for the practice. Reload the "
                                "page and try again.", status=422)

    def finish(self, link: UploadLink, file_id: str, length: int, chunks: int,
               ip: str = "") -> Received:
        """The browser says the file is whole: `length` bytes in `chunks` chunks. Both
        must match what was stored, else the file is refused and deleted."""
        row = self._file(link, file_id)
        if row["size"] != length or row["chunks"] != chunks or not length:
            self._drop(link, file_id, ip, f"chunks do not add up (stored {row['size']} bytes "
                                          f"in {row['chunks']}, announced {length} in {chunks})")
            raise UploadRefused("The parts of this file do not add up; it was deleted. "
                                "Please send it again.", status=422)
        digest = hashlib.sha256()
        for chunk in self.store.uploads.chunks(file_id):
            digest.update(chunk)
        with self.store.transaction():
            if not self.store.uploads.complete_file(file_id, digest.hexdigest(), self.clock()):
                raise UploadRefused("This upload is not (or no longer) open.", status=404)
            self.store.audit.append(AuditAction.UPLOAD_RECEIVED, actor="patient", ip=ip,
                                    reference=link.reference, form_id=link.form_id,
                                    practice=link.practice,
                                    detail=f"file {file_id[:8]}: {length} bytes of ciphertext")
        return Received(file_id, length)

    # -- the plain form post --------------------------------------------------------------
    def form_files(self, link: UploadLink, files: Iterable[tuple[str, IO[bytes]]],
                   lang: str, ip: str = "") -> list[Received]:
        """Encrypt each posted file (name, stream) with gpg and store its ciphertext."""
        allowed = self.allowed_types(link)
        got = []
        for name, stream in files:
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            head = stream.read(64)
            stream.seek(0, 2)
            size = stream.tell()
            stream.seek(0)
            if ext not in allowed or not sniff_upload(ext, head):
                # the name is the patient's text: only a plain extension goes to the log
                shown = ext if re.fullmatch(r"[a-z0-9]{1,10}", ext) else "?"
                self._refused(link, "", ip, f"type .{shown} not accepted or not what "
                                            "its first bytes say")
                raise UploadRefused("Only these file types can be sent: %(types)s.",
                                    status=415, types=", ".join(allowed))
            file_id = self.start(link, size, how="form", ip=ip)
            out = self.settings.tmp_dir / f"upload-{file_id}.asc"
            out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                self.keyring.encrypt_stream(stream, list(link.recipients), out,
                                            compress=False)
                total, n = self._store_file(link, file_id, out, ip)
            finally:
                out.unlink(missing_ok=True)
            got.append(self.finish(link, file_id, total, n, ip))
        return got

    def _store_file(self, link: UploadLink, file_id: str, path: Path, ip: str) -> tuple[int, int]:
        offset = n = 0
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                offset = self.append(link, file_id, offset, chunk, ip=ip, made_here=True)
                n += 1
        return offset, n

    def abandon(self, link: UploadLink, file_id: str, ip: str = "") -> None:
        """The page lost an unfinished file (a reload) and sends it again from its start:
        its chunks are deleted and their bytes given back to the session's limit. Only
        a file still receiving; a finished one is the practice's."""
        self._file(link, file_id)
        with self.store.transaction():
            self.store.uploads.delete_file(file_id, self.clock(), give_back=True)
            self.store.audit.append(AuditAction.UPLOAD_DELETED, actor="patient", ip=ip,
                                    reference=link.reference, form_id=link.form_id,
                                    practice=link.practice,
                                    detail=f"file {file_id[:8]}: unfinished, sent again from its "
                                           "start after a page reload")

    # -- refusing -----------------------------------------------------------------------
    def _drop(self, link: UploadLink, file_id: str, ip: str, why: str) -> None:
        with self.store.transaction():
            self.store.uploads.delete_file(file_id, self.clock(), give_back=True)
            self._refused(link, file_id, ip, why)

    def _refused(self, link: UploadLink, file_id: str, ip: str, why: str) -> None:
        what = f"file {file_id[:8]}: " if file_id else ""
        self.store.audit.append(AuditAction.UPLOAD_REFUSED, "refused", actor="patient", ip=ip,
                                reference=link.reference, form_id=link.form_id,
                                practice=link.practice, detail=what + why)
