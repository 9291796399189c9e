"""Scripted download: a read-only JSON API for a practice's own system, by API token.

`Authorization: Bearer fr_...` (a per-user token made on the account page, shown once,
stored hashed, revocable). No cookies, so no CSRF: every route is a GET that changes
nothing but the audit log. The same rights checks as the web inbox apply, each download
is audited with the token's number, and failed token checks count against the client
address like failed logins (counted per minute, the first of each minute audited; none
written once the address is paused). Errors are JSON (`{"ok": false, "error": ...}`), made by
web/errors.py like every other error.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request, url_for

from ...audit_actions import AuditAction
from ...clinician.login import FAILURE_WINDOW
from ...clinician.user import User
from ...errors import UserError
from ...localtime import iso
from ..common import relay
from .views import area, client_ip, download_response, secure_enough

bp = Blueprint("clinician_api", __name__, url_prefix="/clinician/api")


class ApiError(UserError):
    """Answered as JSON in English by the one error mapper (web/errors.py)."""


@bp.before_request
def authenticate() -> None:
    if not secure_enough():
        raise ApiError("The API works only over HTTPS.", status=403)
    store = relay().store
    ip = client_ip()
    limit = relay().settings.server.login_max_failures_ip
    if store.clinicians.login_failures(store.clock() - FAILURE_WINDOW, ip=ip) >= limit:
        # paused: refused without writing anything (a flood must not grow the audit log)
        raise ApiError("Too many failed attempts. Please wait and try again.", status=429)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    found = area().accounts.user_for_token(token.strip()) if scheme.lower() == "bearer" \
        else None
    if found is None:
        with store.transaction():
            store.clinicians.login_failure("", ip)
            area().accounts.refused_anonymously(
                AuditAction.API_ACCESS, ip, "api token",
                f"{request.path}: missing, unknown or revoked API token")
        raise ApiError("A valid API token is needed: send `Authorization: Bearer <token>`.",
                       status=401)
    g.api_user, g.api_token = found


def _user() -> User:
    user: User = g.api_user
    return user


@bp.get("/submissions")
def submissions() -> Any:
    items = area().inbox.items(_user())
    return jsonify({"ok": True, "submissions": [{
        "reference": i.reference, "form": i.form_id, "form_title": i.form_title,
        "received_at": iso(i.received_at), "size": i.size, "files": i.file_count,
        "delete_after": iso(i.delete_after),
        "downloads": [{"by": who, "at": iso(at)} for who, at in i.downloads],
        "asc": url_for(".fetch", reference=i.reference, _external=True),
        "eml": url_for(".fetch", reference=i.reference, format="eml", _external=True),
    } for i in items]})


@bp.get("/submissions/<reference>")
def fetch(reference: str) -> Any:
    fmt = request.args.get("format", "asc")
    if fmt not in ("asc", "eml"):
        raise ApiError("format must be asc or eml.", status=400)
    return download_response(_user(), reference, fmt, f"API token #{g.api_token}")

