"""The browser reader's pages: make the key in the browser, confirm the recovery sheet,
and the two things the inbox's reader fetches (the locked keys, a ciphertext).

The page's scripts (static/reader/*.js, with the vendored OpenPGP.js) do the
cryptography; these views only show the page, take the public key and the two locked
copies of the private key (`clinician.reader_keys.ReaderKeys` checks and audits them),
activate a key, and hand out the locked keys and ciphertexts (each fetch of a
ciphertext is audited as a read). Nothing decrypted ever comes back here: a failed
decryption is reported by its kind only (damaged, not for this key). Same guard as the
whole area: HTTPS, login, a CSRF token on every POST, the strict CSP (script-src 'self',
no inline script) and Subresource Integrity on every script.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, jsonify, redirect, request, url_for

from ...audit_actions import AuditAction
from ...clinician.reader_keys import KeyUploadRefused, RecoveryPaused
from ...clinician.user import User
from ...errors import NotFound
from ..widget import openpgp_file
from .views import area, client_ip, current_user, guard, login_required, page, t

bp = Blueprint("clinician_reader", __name__, url_prefix="/clinician")
bp.before_request(guard)


def _user() -> User:
    user = current_user()
    assert user is not None  # noqa: S101 - login_required
    return user


@bp.get("/key/")
@login_required
def key() -> Any:
    user = _user()
    keys = area().reader_keys
    return page("clinician/key.html", openpgp=openpgp_file(), keys=keys.keys(user),
                active=keys.active(user), browser=keys.browser_recipients(user))


@bp.post("/key/")
@login_required
def upload() -> Any:
    f = request.form
    try:
        made = area().reader_keys.upload(_user(), f.get("fingerprint", ""),
                                         f.get("public_key", ""), f.get("locked_key", ""),
                                         f.get("recovery_locked_key", ""), client_ip())
    except KeyUploadRefused as exc:
        return jsonify(ok=False, error=t(exc.message, **exc.params)), exc.status
    return jsonify(ok=True, key_id=made.id, fingerprint=made.grouped,
                   activate=url_for("clinician_reader.activate", key_id=made.id))


@bp.post("/key/<int:key_id>/activate")
@login_required
def activate(key_id: int) -> Any:
    try:
        key = area().reader_keys.activate(_user(), key_id, client_ip())
    except KeyUploadRefused as exc:
        flash(t(exc.message, **exc.params))
        return redirect(url_for("clinician_reader.key"))
    flash(t("Your key %(fingerprint)s is active: new submissions are encrypted to it.",
            fingerprint=key.grouped))
    return redirect(url_for("clinician.inbox"))


def _recovery_tag(user: User) -> str:
    """Recovery attempts are counted like failed logins, under a tag of their own."""
    return "recovery:" + area().accounts.name_tag(user.username)


@bp.post("/key/recovery")
@login_required
def recovery() -> Any:
    """The recovery copies (each fetch is an attempt; paused after too many)."""
    user = _user()
    try:
        keys = area().reader_keys.recovery_copies(user, client_ip(), _recovery_tag(user))
    except RecoveryPaused as exc:
        return jsonify(ok=False, error=t(exc.message)), exc.status
    return jsonify(ok=True, keys=[{"id": k.id, "fingerprint": k.fingerprint,
                                   "recovery_locked_key": k.recovery_locked_key,
                                   "relock": url_for("clinician_reader.relock", key_id=k.id)}
                                  for k in keys])


@bp.post("/key/<int:key_id>/relock")
@login_required
def relock(key_id: int) -> Any:
    user = _user()
    try:
        area().reader_keys.relock(user, key_id, request.form.get("locked_key", ""),
                                  client_ip(), _recovery_tag(user))
    except KeyUploadRefused as exc:
        return jsonify(ok=False, error=t(exc.message, **exc.params)), exc.status
    return jsonify(ok=True)


@bp.get("/key/<int:key_id>.asc")
@login_required
def export(key_id: int) -> Any:
    """The locked private key for Thunderbird or GnuPG: the reading passphrase opens it
    there too. Audited."""
    user = _user()
    keys = area().reader_keys
    key = keys.get(user, key_id)
    if key is None or key.state == "pending":
        raise NotFound("There is no such key.")
    keys.export_audit(user, key, client_ip())
    resp = Response(key.locked_key, mimetype="application/pgp-keys")
    resp.headers["Content-Disposition"] = (f'attachment; filename="formrelay-{user.username}-'
                                           f'{key.fingerprint[-16:]}.asc"')
    return resp


@bp.get("/key/locked")
@login_required
def locked() -> Any:
    """The account's locked keys (active and retired): the page unlocks them in memory."""
    return jsonify(ok=True, keys=[{"fingerprint": k.fingerprint, "state": k.state,
                                   "locked_key": k.locked_key}
                                  for k in area().reader_keys.keys(_user())
                                  if k.state in ("active", "retired")])


@bp.get("/read/<reference>")
@login_required
def ciphertext(reference: str) -> Any:
    """The held ciphertext, for the page to decrypt; audited as a read."""
    user = _user()
    box = area().inbox
    item = box.get(user, reference, action=AuditAction.READ, ip=client_ip())
    area().store.audit.append(AuditAction.READ, actor=user.actor, ip=client_ip(),
                              reference=item.reference, form_id=item.form_id,
                              detail="ciphertext fetched to decrypt in the browser")
    resp = Response(box.asc_chunks(item), mimetype="application/pgp-encrypted")
    resp.headers["Content-Length"] = str(item.size)
    return resp


@bp.post("/read/<reference>/failed")
@login_required
def failed(reference: str) -> Any:
    """The page could not decrypt: which kind of failure, never any content."""
    user = _user()
    why = READ_FAILURES.get(request.form.get("why", ""), "unknown failure")
    item = area().inbox.get(user, reference, action=AuditAction.READ, ip=client_ip())
    area().store.audit.append(AuditAction.READ, "failed", actor=user.actor, ip=client_ip(),
                              reference=item.reference, form_id=item.form_id, detail=why)
    return jsonify(ok=True)


READ_FAILURES = {"damaged": "the ciphertext is damaged (integrity check failed)",
                 "not-for-key": "not encrypted to any of the reader's keys"}
