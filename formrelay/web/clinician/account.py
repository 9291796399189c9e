"""The clinician's own account page: password, recovery codes, API tokens.

New recovery codes and a new API token are shown once, in the answer to the POST that
made them; only their hashes are kept. Same guard as the rest of the area (HTTPS,
CSRF on every form, login required); every change is audited by `clinician.accounts.Accounts`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, request, url_for

from ...clinician.accounts import AccountError
from ...clinician.members import OWNER
from ...clinician.user import LoginFailure, LoginRefused, User
from .views import area, client_ip, current_user, guard, login_required, page, t

bp = Blueprint("clinician_account", __name__, url_prefix="/clinician/account")
bp.before_request(guard)


def _user() -> User:
    user = current_user()
    assert user is not None  # noqa: S101 - login_required
    return user


def _page(status: int = 200, **ctx: Any) -> tuple[str, int]:
    user = _user()
    accounts = area().accounts
    return page("clinician/account.html", status, tokens=accounts.tokens(user),
                recovery_left=accounts.recovery_codes_left(user),
                owner=area().store.readers.role_of(user.id) == OWNER, **ctx)


@bp.get("/")
@login_required
def account() -> Any:
    return _page()


@bp.post("/password")
@login_required
def password() -> Any:
    new = request.form.get("new", "")
    if new != request.form.get("repeat", ""):
        return _page(400, password_error=t("The two new passwords are not the same."))
    try:
        area().accounts.change_password(_user(), request.form.get("old", ""), new, client_ip())
    except LoginRefused as exc:
        if exc.reason == LoginFailure.BUSY:
            return _page(429, password_error=t(
                "The server is busy with many logins. Wait a minute and try again."))
        return _page(400, password_error=t("Your current password is not right."))
    except AccountError:
        return _page(400, password_error=t(
            "Choose a password of at least 12 characters that does not contain your user "
            "name (a few words make a good one)."))
    flash(t("Your password was changed."))
    return redirect(url_for("clinician_account.account"))


@bp.post("/recovery-codes")
@login_required
def recovery_codes() -> Any:
    codes = area().accounts.renew_recovery_codes(_user(), client_ip())
    return page("clinician/recovery.html", codes=codes, renewed=True)


@bp.post("/tokens")
@login_required
def new_token() -> Any:
    token = area().accounts.new_token(_user(), request.form.get("name", ""), client_ip())
    return _page(new_token=token)


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int) -> Any:
    if area().accounts.revoke_token(_user(), token_id, client_ip()):
        flash(t("The API token was revoked."))
    return redirect(url_for("clinician_account.account"))
