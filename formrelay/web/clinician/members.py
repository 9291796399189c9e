"""The practice owner's members page: who reads which forms, and invitations.

Thin: `clinician.members.Members` checks the owner role, the practice and the links, and
the invitation is audited with the owner as actor. Same guard as the whole area.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from ...clinician.accounts import AccountError
from ...clinician.members import Members, NotOwner
from ...clinician.user import User
from .views import area, current_user, guard, login_required, page, t

bp = Blueprint("clinician_members", __name__, url_prefix="/clinician/members")
bp.before_request(guard)


def members() -> Members:
    s = area()
    return Members(s.settings, s.store, s.accounts, s.invitations, s.reader_keys)


def _user() -> User:
    user = current_user()
    assert user is not None  # noqa: S101 - login_required
    return user


def _page(status: int = 200, **ctx: Any) -> Any:
    m, user = members(), _user()
    try:
        rows = m.overview(user)
    except NotOwner as exc:
        return page("error.html", exc.status, message=t(exc.message))
    recipients, forms = m.choices(user)
    return page("clinician/members.html", status, members=rows, recipients=recipients,
                form_ids=forms, **ctx)


@bp.get("/")
@login_required
def overview() -> Any:
    return _page()


@bp.post("/invite")
@login_required
def invite() -> Any:
    f = request.form
    role = f.get("role", "reader")
    try:
        invited = members().invite(_user(), f.get("username", ""), f.get("email", ""), role,
                                   f.get("recipient" if role == "reader" else "form", ""))
    except NotOwner as exc:
        return page("error.html", exc.status, message=t(exc.message))
    except AccountError as exc:
        return _page(400, error=exc.english())
    return _page(invited=invited)
