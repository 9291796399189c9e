"""The browser reader's pages: make the key in the browser, confirm the recovery sheet.

The page's scripts (static/reader/*.js, with the vendored OpenPGP.js) do the
cryptography; these views only show the page, take the public key and the two locked
copies of the private key (`clinician.reader_keys.ReaderKeys` checks and audits them)
and activate a key. Same guard as the whole area: HTTPS, login, a CSRF token on every
POST, the strict CSP (script-src 'self', no inline script) and Subresource Integrity on
every script.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, flash, jsonify, redirect, request, url_for

from ...clinician.reader_keys import KeyUploadRefused
from ...clinician.user import User
from .views import area, client_ip, current_user, guard, login_required, page, t

bp = Blueprint("clinician_reader", __name__, url_prefix="/clinician/key")
bp.before_request(guard)


def _user() -> User:
    user = current_user()
    assert user is not None  # noqa: S101 - login_required
    return user


def openpgp_file() -> str:
    """The vendored OpenPGP.js (static/vendor/openpgp.json names the file)."""
    record = Path(current_app.static_folder or "") / "vendor" / "openpgp.json"
    return "vendor/" + json.loads(record.read_text(encoding="utf-8"))["file"]


def needs_key(user: User) -> bool:
    """A reader of a browser recipient without an active key: the key page comes first."""
    keys = area().reader_keys
    return bool(keys.browser_recipients(user)) and keys.active(user) is None


@bp.get("/")
@login_required
def key() -> Any:
    user = _user()
    keys = area().reader_keys
    return page("clinician/key.html", openpgp=openpgp_file(), keys=keys.keys(user),
                active=keys.active(user), browser=keys.browser_recipients(user))


@bp.post("/")
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


@bp.post("/<int:key_id>/activate")
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
