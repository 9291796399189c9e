"""The invitation link: choose a password, then the usual first login (views.enrol).

Same guard as the rest of the area (HTTPS, CSRF on the form). The link's secret is in
the path; `clinician.invitations.Invitations` checks it, uses it once and audits; an
unusable link gets a page that says what to do (410), never a login form.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, request, session, url_for

from ...clinician.accounts import AccountError
from ...clinician.invitations import InvitationRefused
from ...localtime import iso
from ..common import relay
from .views import area, client_ip, guard, page, sess, t

bp = Blueprint("clinician_invite", __name__, url_prefix="/clinician/invite")
bp.before_request(guard)


@bp.route("/<token>", methods=["GET", "POST"])
def invite(token: str) -> Any:
    invitations = area().invitations
    try:
        user = invitations.check(token, client_ip())
    except InvitationRefused as exc:
        return page("clinician/invite_gone.html", exc.status, error=t(exc.message))
    if request.method == "GET":
        return page("clinician/invite.html", invited=user)
    password = request.form.get("password", "")
    if password != request.form.get("repeat", ""):
        return page("clinician/invite.html", 400, invited=user,
                    error=t("The two passwords are not the same."))
    try:
        user = invitations.accept(token, password, client_ip())
    except InvitationRefused as exc:
        return page("clinician/invite_gone.html", exc.status, error=t(exc.message))
    except AccountError:
        return page("clinician/invite.html", 400, invited=user, error=t(
            "Choose a password of at least 12 characters that does not contain your user "
            "name (a few words make a good one)."))
    keep = session.get("lang")
    session.clear()
    sess().regenerate()
    # the password step is done: on to the authenticator app, as after a first login
    session.update({"pending": {"uid": user.id, "at": iso(relay().store.clock())},
                    **({"lang": keep} if keep else {})})
    return redirect(url_for("clinician.enrol"))
