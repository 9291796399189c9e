"""Server-side sessions for the clinician area, with real timeouts and logout.

The cookie `__Host-formrelay` (Secure, HttpOnly, SameSite=Strict, Path=/, no Domain)
holds only a random id; the database keeps a hash of it with the session's data, when it
started and when it was last used. That row exists only from the password step on:
before it (the login form's CSRF token, the language, a notice) the same cookie holds
that little state itself, signed and as short-lived as an idle session, so anonymous
visits write nothing to the database. A session unused for `server.session_idle_minutes`
or older than `server.session_max_hours` is deleted when it comes back (and audited), and
logout deletes it, so an old cookie is worth nothing. Views call `regenerate()` at login
for a new id (no session fixation) and `end()` at logout. Outside /clinician/ (and on the
token-authenticated API) this interface hands over to Flask's default one untouched.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SecureCookieSessionInterface, SessionInterface, SessionMixin
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.datastructures import CallbackDict

from ...audit_actions import AuditAction
from ...localtime import parse_iso
from ...store import Store
from ..common import services

COOKIE = "__Host-formrelay"
AREA = "/clinician/"
API = "/clinician/api/"
PRE_LOGIN_SALT = "formrelay.clinician.pre-login"


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class ClinicianSession(CallbackDict[str, Any], SessionMixin):
    def __init__(self, data: dict[str, Any] | None = None, sid: str = "",
                 created_at: datetime | None = None, *, stateless: bool = False):
        def on_update(_: CallbackDict[str, Any]) -> None:
            self.modified = True

        super().__init__(data or {}, on_update)
        self.sid = sid
        self.created_at = created_at
        self.new = not sid
        self.modified = False
        self.stateless = stateless
        self.rotate = False
        self.destroy = False

    def regenerate(self) -> None:
        """Use a new session id from this response on (call at login)."""
        self.rotate = True
        self.modified = True

    def end(self) -> None:
        """Delete the session and its cookie (logout)."""
        self.clear()
        self.destroy = True


def _store(app: Flask) -> Store:
    return services().store


def _signed(app: Flask) -> URLSafeSerializer:
    return URLSafeSerializer(services().settings.secret_key, salt=PRE_LOGIN_SALT)


def _signed_in(data: dict[str, Any]) -> bool:
    """Past the password step (or logged in): only then is there a row."""
    return bool(data.get("uid") or data.get("pending"))


class ClinicianSessionInterface(SessionInterface):
    def __init__(self, fallback: SessionInterface | None = None):
        self.fallback = fallback or SecureCookieSessionInterface()

    @staticmethod
    def applies(request: Request) -> bool:
        return request.path.startswith(AREA)

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if not self.applies(request):
            return self.fallback.open_session(app, request)
        if request.path.startswith(API):  # bearer tokens, never cookies
            return ClinicianSession(stateless=True)
        store = _store(app)
        # the timeouts in force: a reload may have changed them since the app was built
        server = services().settings.server
        now = store.clock()
        sid = request.cookies.get(COOKIE, "")
        if "." in sid:  # a signed pre-login state; a random id has no dot
            return self._open_pre_login(app, sid, now, server.session_idle_minutes)
        row = store.clinicians.session(_hash(sid)) if 20 <= len(sid) <= 100 else None
        if row is None:
            return ClinicianSession()
        created, seen = parse_iso(row["created_at"]), parse_iso(row["seen_at"])
        data = _loads(row["data"])
        why = ("idle" if now - seen > timedelta(minutes=server.session_idle_minutes) else
               "too old" if now - created > timedelta(hours=server.session_max_hours) else "")
        if not why:
            return ClinicianSession(data, sid, created)
        with store.transaction():
            store.clinicians.session_delete(_hash(sid))
            if data.get("uid"):
                store.audit.append(AuditAction.SESSION_EXPIRED, actor=data.get("actor", ""),
                                   ip=request.remote_addr or "",
                                   detail=f"{why}: idle {_minutes(now - seen)} min, "
                                          f"age {_minutes(now - created)} min")
        fresh = ClinicianSession()
        if data.get("uid") or data.get("pending"):
            fresh["notice"] = "expired"
        return fresh

    @staticmethod
    def _open_pre_login(app: Flask, value: str, now: datetime,
                        idle_minutes: int) -> ClinicianSession:
        try:
            state: Any = _signed(app).loads(value)
            data, seen = dict(state["d"]), float(state["t"])
        except (BadSignature, KeyError, TypeError, ValueError):
            return ClinicianSession()
        if now.timestamp() - seen > idle_minutes * 60 or _signed_in(data):
            return ClinicianSession()  # open too long (its CSRF token goes with it)
        return ClinicianSession(data)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, ClinicianSession):
            self.fallback.save_session(app, session, response)
            return
        if session.stateless:
            return
        store = _store(app)
        response.vary.add("Cookie")
        if session.destroy:
            if session.sid:
                store.clinicians.session_delete(_hash(session.sid))
            response.delete_cookie(COOKIE, path="/", secure=True, httponly=True,
                                   samesite="Strict")
            return
        if not _signed_in(session):
            self._save_pre_login(app, session, response)
            return
        now = store.clock()
        if session.rotate and session.sid:
            store.clinicians.session_delete(_hash(session.sid))
        if session.rotate or session.new:
            session.sid, session.created_at = secrets.token_urlsafe(32), now
        # Every request counts as activity (seen_at), so this is written every time.
        # Tied to the user also half-way through the login, so disabling or removing
        # the account ends that too.
        uid = session.get("uid") or (session.get("pending") or {}).get("uid")
        store.clinicians.session_save(_hash(session.sid), uid, session.created_at or now, now,
                                      dict(session))
        if session.rotate or session.new:
            response.set_cookie(COOKIE, session.sid, path="/", secure=True, httponly=True,
                                samesite="Strict")

    @staticmethod
    def _save_pre_login(app: Flask, session: ClinicianSession, response: Response) -> None:
        """Before the password step the state travels in the cookie itself, re-signed with
        the time on every answer (an idle limit like a session's): no row, so a flood of
        anonymous requests costs the database nothing."""
        store = _store(app)
        if session.sid:  # a row that fell back to anonymous (its login step expired)
            store.clinicians.session_delete(_hash(session.sid))
        if not session:
            return  # nothing to remember: no cookie at all
        value = _signed(app).dumps({"d": dict(session), "t": store.clock().timestamp()})
        response.set_cookie(COOKIE, value, path="/", secure=True, httponly=True,
                            samesite="Strict")


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _loads(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
