"""One-time upload links: made, mailed, opened, closed and expired (no Flask).

A link is `<base_url>/u/<id>.<secret>`: `<id>` names its row, `<secret>` (256 bits) is
kept only as its SHA-256, so the database alone cannot make a working link. Unlike a
copy link the secret is in the path, not the fragment, because the no-JavaScript
upload (an ordinary form post) must reach it; a link only lets its holder *send*
documents to the practice, never read anything, and it serves one session.

A link is bound when it is made to one practice and the recipients it encrypts to, by
id and pinned fingerprint (crypto/pins.py), so a reload that changes the configuration
never sends a patient's documents to anyone else. The recipients are the readers as the
relay encrypts a submission to them (`pins.with_readers`: the configuration with the
readers the practice owner added or took off): the form's, for a link after a
submission; for one a clinician sends to a new patient, everyone who reads one of the
practice's forms (its configured recipients when it has no form). It works for
server.upload_expiry_days (default 7), for one upload session: the patient's "done"
closes it. The mail holds the practice name, the expiry and the link; the outbox keeps
the link and the address only sealed with a key from FORMRELAY_SECRET_KEY, as for copy
links.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ..audit_actions import AuditAction
from ..crypto import pins, sealing
from ..crypto.keyring import CryptoError
from ..errors import UserError
from ..i18n import gettext
from ..intake.addresses import header_problem
from ..intake.submission import new_reference
from ..localtime import iso, parse_iso
from ..mail.kinds import BuildError, MailKind, sealed_recipient
from ..settings import UPLOAD_MAX_EXPIRY_DAYS, PracticeSettings, Recipient, Settings
from ..store import OutboxMail, Store

MAIL_KIND = "upload_link"
NOTICE_KIND = "upload_notice"
SECRET_BYTES = 32
PAYLOAD_PURPOSE = b"formrelay outbox upload-link v1"
NOTE_PURPOSE = b"formrelay upload-link note v1"
MAX_NOTE = 200  # characters: a short line ("the letter from the dermatologist, please")


class LinkState(StrEnum):
    """Why a link cannot be used. ALTERED covers a made-up id and a wrong secret alike,
    so a guess learns nothing about which links exist."""

    ALTERED = "altered"
    CLOSED = "closed"
    EXPIRED = "expired"


class LinkRefused(UserError):
    def __init__(self, state: LinkState, *, lang: str = "", practice: str = ""):
        super().__init__("This link does not work")
        self.state = state
        self.lang = lang
        self.practice = practice


@dataclass(frozen=True)
class UploadLink:
    """An open link, as the upload page and the upload protocol use it."""

    id: str
    reference: str
    practice: str
    form_id: str
    recipients: tuple[str, ...]  # fingerprints, fixed when the link was made
    lang: str
    expires_at: datetime
    used_bytes: int
    note: str = ""  # the clinician's note, unsealed, for the upload page
    recipient_ids: tuple[str, ...] = ()  # the recipients those fingerprints were, then


@dataclass(frozen=True)
class Invitation:
    reference: str
    expires_at: datetime
    link: str  # holds the secret: only for the outbox's sealed payload and tests


def b64e(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _check_hash(secret: str) -> str:
    return hashlib.sha256(f"formrelay upload link v1|{secret}".encode()).hexdigest()


def check_address(value: str, lang: str, field: str = "email") -> str:
    """The patient's address, normalised; UserError (next to `field`) when it cannot be
    used, including encoded words and header tricks (as the form refuses them)."""
    from email_validator import EmailNotValidError, validate_email

    value = (value or "").strip()
    if not value:
        raise UserError("Please correct the marked fields.", errors={field: [gettext(
            lang, "Fill in your e-mail address to receive the link.")]})
    if header_problem(value):
        raise UserError("Please correct the marked fields.", errors={field: [gettext(
            lang, "This e-mail address cannot be used. Type it plainly, e.g. name@example.nl.")]})
    try:
        address = str(validate_email(value, check_deliverability=False).normalized)
    except EmailNotValidError:
        raise UserError("Please correct the marked fields.", errors={field: [gettext(
            lang, "Enter a valid e-mail address, e.g. name@example.nl.")]}) from None
    if header_problem(address):
        raise UserError("Please correct the marked fields.", errors={field: [gettext(
            lang, "This e-mail address cannot be used. Type it plainly, e.g. name@example.nl.")]})
    return address


def check_note(value: str, lang: str = "en") -> str:
    """The clinician's optional note, stripped; UserError (next to `note`) when it is
    longer than MAX_NOTE characters or holds a control or formatting character (a new
    line, a tab, an escape, a right-to-left override): one short, plain line."""
    note = (value or "").strip()
    if len(note) > MAX_NOTE:
        raise UserError("Please correct the marked fields.", errors={"note": [gettext(
            lang, "The note is %(n)s characters long; keep it to %(max)s.", n=len(note),
            max=MAX_NOTE)]})
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") for c in note):
        raise UserError("Please correct the marked fields.", errors={"note": [gettext(
            lang, "The note must be one line of plain text, without control characters.")]})
    return note


def _note_aad(link_id: str) -> bytes:
    return f"upload-link-note|{link_id}".encode()


class UploadLinks:
    def __init__(self, settings: Settings, store: Store, clock: Callable[[], datetime]):
        self.settings = settings
        self.store = store
        self.clock = clock
        days = min(max(1, settings.server.upload_expiry_days), UPLOAD_MAX_EXPIRY_DAYS)
        self.expiry = timedelta(days=days)

    # -- sizes ------------------------------------------------------------------------
    def limit_bytes(self, practice_id: str) -> int:
        """What one session of this practice's patients may send, in bytes."""
        p = self.settings.practice(practice_id)
        mb = (p.upload_limit_mb if p and p.upload_limit_mb else 0) \
            or self.settings.server.upload_limit_mb
        return mb * 1024 * 1024

    # -- making one ---------------------------------------------------------------------
    def for_submission(self, reference: str, email: str, lang: str, *, actor: str,
                       ip: str = "", note: str = "") -> Invitation:
        """A link for the patient of submission `reference`, to the form's recipients,
        for the practice recorded with the submission: a form id another practice
        reuses after a reload sends no patient's documents to that practice's keys."""
        reference = reference.strip().upper()
        row = self.store.submissions.get(reference)
        spec = self.settings.form(row["form_id"]) if row else None
        if row is None or spec is None or not row["practice"] or \
                spec.practice != row["practice"]:
            raise UserError("No submission %(reference)s is kept here: check the reference, "
                            "or send the link with --practice for a patient without one.",
                            reference=reference)
        practice = self.settings.practice_of(spec.id)
        spec = pins.with_readers(self.store, self.settings.recipients, spec)
        return self._make(practice, spec.id, reference, list(spec.recipients), email, lang,
                          actor, ip, note)

    def for_practice(self, practice_id: str, email: str, lang: str, *, actor: str,
                     ip: str = "", note: str = "") -> Invitation:
        """A link for a patient without a submission: a new reference, the practice's
        recipients."""
        practice = self.settings.practice(practice_id)
        if practice is None:
            known = ", ".join(sorted(self.settings.practices)) or self.settings.default_practice.id
            raise UserError("No practice %(practice)s is configured (known: %(known)s).",
                            practice=practice_id, known=known)
        readers: list[str] = []
        for fid in practice.forms:
            spec = self.settings.form(fid)
            if spec is not None:
                spec = pins.with_readers(self.store, self.settings.recipients, spec)
                readers += [r for r in spec.recipients if r not in readers]
        if not practice.forms:  # nothing for an owner to change: the configuration's
            readers = [r for r in practice.recipients if r in self.settings.recipients]
        reference = new_reference()
        while self.store.submissions.get(reference) or self.store.uploads.links_of(reference):
            reference = new_reference()
        return self._make(practice, "", reference, readers, email, lang, actor, ip, note)

    def asked_already(self, reference: str) -> bool:
        """Did the patient already ask for a link for this submission (thank-you page)?"""
        return any(r["asked_by"] == "patient" for r in self.store.uploads.links_of(reference))

    def _make(self, practice: PracticeSettings, form_id: str, reference: str,
              ids: list[str], email: str, lang: str, actor: str,
              ip: str, note: str = "") -> Invitation:
        if not ids:
            raise UserError("Practice %(practice)s has no recipients to encrypt documents to: "
                            "add one to its configuration first.", practice=practice.id)
        try:  # pinned as for a submission: a reader without a key fails closed
            fingerprints = pins.fingerprints(self.store, self.settings.recipients, ids)
        except CryptoError:
            raise UserError("No link can be sent now: a reader of %(practice)s has no usable "
                            "key yet (see `formrelay check`).", practice=practice.id) from None
        address = check_address(email, lang)
        note = check_note(note, lang)
        now = self.clock()
        link_id, secret = b64e(secrets.token_bytes(16)), b64e(secrets.token_bytes(SECRET_BYTES))
        note_sealed = sealing.seal_text(self.settings.secret_key, NOTE_PURPOSE, note,
                                        _note_aad(link_id)) if note else ""
        expires = now + self.expiry
        link = f"{self.settings.server.base_url.rstrip('/')}/u/{link_id}.{secret}"
        with self.store.transaction():
            self.store.uploads.add_link({
                "id": link_id, "check_hash": _check_hash(secret), "practice": practice.id,
                "form_id": form_id, "reference": reference, "recipients": fingerprints,
                "recipient_ids": ids,
                "lang": lang, "asked_by": actor, "created_at": iso(now),
                "expires_at": iso(expires), "note_sealed": note_sealed})
            self.store.audit.append(AuditAction.UPLOAD_INVITED, actor=actor, ip=ip,
                                    reference=reference, form_id=form_id, practice=practice.id,
                                    detail=f"to {len(fingerprints)} recipient key(s), until "
                                           f"{iso(expires)[:16]}Z")
            payload = seal(self.settings, {"link": link, "expires": iso(expires), "lang": lang,
                                           "practice": practice.id, "note": note}, reference)
            self.store.outbox.enqueue(MAIL_KIND, reference,
                                      [sealed_recipient(self.settings, address, reference)],
                                      payload, form_id, practice=practice.id)
        return Invitation(reference, expires, link)

    # -- using one ------------------------------------------------------------------------
    def open(self, token: str) -> UploadLink:
        """The open link a token names; LinkRefused when it is forged, closed or expired."""
        m = re.fullmatch(r"([A-Za-z0-9_-]{16,32})\.([A-Za-z0-9_-]{32,64})", token or "")
        row = self.store.uploads.link(m.group(1)) if m else None
        if m is None or row is None or not hmac.compare_digest(
                _check_hash(m.group(2)), row["check_hash"]):
            raise LinkRefused(LinkState.ALTERED)
        if row["state"] == "open" and self.clock() >= parse_iso(row["expires_at"]):
            self.expire(row["id"])
            row["state"] = "expired"
        if row["state"] != "open":
            raise LinkRefused(LinkState(row["state"]), lang=row["lang"], practice=row["practice"])
        return UploadLink(row["id"], row["reference"], row["practice"], row["form_id"],
                          tuple(row["recipients"]), row["lang"], parse_iso(row["expires_at"]),
                          int(row["used_bytes"]), self._note(row),
                          tuple(row.get("recipient_ids") or ()))

    def _note(self, row: dict[str, Any]) -> str:
        """The link's note in clear, '' when there is none or it no longer opens (a
        changed FORMRELAY_SECRET_KEY): the note is a courtesy, the upload works without."""
        if not row.get("note_sealed"):
            return ""
        try:
            return sealing.unseal_text(self.settings.secret_key, NOTE_PURPOSE,
                                       row["note_sealed"], _note_aad(row["id"]))
        except sealing.Unsealable:
            return ""

    def close(self, link: UploadLink, ip: str = "") -> int:
        """The patient is done: the session ends, the link answers 'used' from now on.
        Returns how many files it delivered; when there are any, the link's recipients
        get a notice (reference and count only) through the outbox."""
        files = self.store.uploads.files_of(link_id=link.id)
        to = [r.email for r in link_recipients(self.settings, self.store, link).values()]
        with self.store.transaction():
            if not self.store.uploads.close_link(link.id, "closed", self.clock()):
                raise LinkRefused(LinkState.CLOSED, lang=link.lang, practice=link.practice)
            # unfinished files of this session can never be finished now
            for f in self.store.uploads.files_of(link_id=link.id, state="receiving"):
                self.store.uploads.delete_file(f["id"], self.clock(), give_back=True)
            self.store.audit.append(AuditAction.UPLOAD_CLOSED, actor="patient", ip=ip,
                                    reference=link.reference, form_id=link.form_id,
                                    practice=link.practice, detail=f"{len(files)} file(s)")
            if files and to:
                body = json.dumps({"practice": link.practice, "files": len(files)}).encode()
                self.store.outbox.enqueue(NOTICE_KIND, link.reference, to, body, link.form_id,
                                          practice=link.practice)
        return len(files)

    def expire(self, link_id: str | None = None) -> int:
        """End the sessions of links past their date (one, or all due); their unfinished
        files are deleted, finished ones stay for the clinician."""
        now = self.clock()
        rows = self.store.uploads.due_links(now)
        if link_id is not None:
            rows = [r for r in rows if r["id"] == link_id]
        for row in rows:
            with self.store.transaction():
                if not self.store.uploads.close_link(row["id"], "expired", now):
                    continue
                self.store.audit.append(AuditAction.UPLOAD_EXPIRED, reference=row["reference"],
                                        form_id=row["form_id"], practice=row["practice"],
                                        detail="link expired")
                for f in self.store.uploads.files_of(link_id=row["id"], state="receiving"):
                    self.store.uploads.delete_file(f["id"], now, give_back=False)
                    self.store.audit.append(
                        AuditAction.UPLOAD_DELETED, reference=row["reference"],
                        form_id=row["form_id"], practice=row["practice"],
                        detail=f"unfinished file {f['id'][:8]} ({f['size']} bytes)")
        return len(rows)


def link_recipients(settings: Settings, store: Store,
                    link: UploadLink) -> dict[str, Recipient]:
    """fingerprint -> the recipient (pinned to it) each of the link's keys was made for,
    while that is still the recipient's key in the link's practice: a key changed since
    (a new key file, a new key made in the browser) or a recipient a reload moved or
    removed is left out, so the page fails closed rather than encrypt to an old key. By
    the ids recorded beside the fingerprints (a browser recipient has no fingerprint in
    the configuration); for a link from before ids were recorded, by a key file's."""
    configured = settings.recipients
    if len(link.recipient_ids) != len(link.recipients):
        by_fpr = {r.fingerprint: r for r in pins.file_recipients(configured).values()}
        return {fpr: by_fpr[fpr] for fpr in link.recipients if fpr in by_fpr}
    mine = {rid: configured[rid] for rid in link.recipient_ids
            if rid in configured and configured[rid].practice == link.practice}
    now = {rid: fpr for rid, (fpr, _) in pins.active_pins(store, mine).items()}
    now.update((rid, r.fingerprint) for rid, r in pins.file_recipients(mine).items())
    return {fpr: pins.pinned(mine[rid], fpr)
            for fpr, rid in zip(link.recipients, link.recipient_ids, strict=True)
            if now.get(rid) == fpr}


# -- the mail ---------------------------------------------------------------------------
def seal(settings: Settings, data: dict[str, Any], reference: str) -> bytes:
    return sealing.seal_json(settings.secret_key, PAYLOAD_PURPOSE, data,
                             f"{MAIL_KIND}|{reference}".encode())


def unseal(settings: Settings, blob: bytes, reference: str) -> dict[str, Any]:
    try:
        return sealing.unseal_json(settings.secret_key, PAYLOAD_PURPOSE, blob,
                                   f"{MAIL_KIND}|{reference}".encode())
    except sealing.Unsealable:
        raise BuildError("upload link payload cannot be opened (was FORMRELAY_SECRET_KEY "
                         "changed?)") from None


def build_mail(mail: OutboxMail, settings: Settings, store: Store) -> bytes:
    """The link mail: practice name, the link, its expiry, the contact line. Nothing
    the patient sent, a neutral subject, no attachment."""
    from ..localtime import shown
    from .mail import link_message

    data = unseal(settings, mail.payload or b"", mail.reference)
    practice = settings.practice_or_default(data.get("practice", ""))
    expires = shown(parse_iso(data["expires"]), practice.timezone or settings.server.timezone)
    return link_message(mail, settings, practice, data.get("lang", "nl"), data["link"],
                        expires, str(data.get("note", "")))


def link_mail_sent(mail: OutboxMail, store: Store) -> None:
    store.audit.append(AuditAction.UPLOAD_MAIL_SENT, reference=mail.reference, form_id=mail.form_id,
                       practice=mail.practice or None, detail="upload link to the patient")


def build_notice(mail: OutboxMail, settings: Settings, store: Store) -> bytes:
    """The recipients' notice: a reference has new documents in the clinician area."""
    from .mail import notice_message

    data = json.loads(mail.payload or b"{}")
    practice = settings.practice_or_default(str(data.get("practice", "")))
    return notice_message(mail, settings, practice, int(data.get("files", 0)))


LINK_MAIL = MailKind(MAIL_KIND, build_mail, on_sent=link_mail_sent)
NOTICE_MAIL = MailKind(NOTICE_KIND, build_notice)
