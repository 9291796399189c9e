"""The practice owner's members page: who reads which forms, and invitations.

Thin: `clinician.members.Members` checks the owner role, the practice and the links, and
the invitation is audited with the owner as actor. Same guard as the whole area.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, request

from ...clinician.accounts import AccountError
from ...clinician.form_readers import Readers, ReadersRefused
from ...clinician.members import Members, NotOwner
from ...clinician.user import User
from .views import area, client_ip, current_user, guard, login_required, page, t

bp = Blueprint("clinician_members", __name__, url_prefix="/clinician/members")
bp.before_request(guard)


def members() -> Members:
    s = area()
    return Members(s.settings, s.store, s.accounts, s.invitations, s.reader_keys)


def readers() -> Readers:
    s = area()
    return Readers(s.settings, s.store, s.relay, members())


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
                form_ids=forms, form_readers=readers().overview(user), **ctx)


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


@bp.post("/readers/add")
@login_required
def add_reader() -> Any:
    """A member's key added to a form's readers: later submissions are encrypted to it."""
    return _change_readers(readers().add)


@bp.post("/readers/remove")
@login_required
def remove_reader() -> Any:
    return _change_readers(readers().remove)


def _change_readers(change: Callable[[User, str, str, str], None]) -> Any:
    f = request.form
    try:
        change(_user(), f.get("form", ""), f.get("recipient", ""), client_ip())
    except NotOwner as exc:
        return page("error.html", exc.status, message=t(exc.message))
    except ReadersRefused as exc:
        return _page(exc.status, readers_error=t(exc.message, **exc.params))
    return _page(readers_changed=f.get("form", ""))
