"""The clinician area's web side: the login and inbox views (views.py), the account
page (account.py), the invitation link (invite.py), the browser reader (reader.py), the
owner's members page (members.py), the JSON API (api.py) and the server-side session
(session.py)."""

from __future__ import annotations

from flask import Flask

from . import account, api, invite, members, reader, views
from .session import ClinicianSessionInterface


def register(app: Flask) -> None:
    """Mount the area: server-side sessions, the views' blueprint, the account page and
    the API (both build on the views)."""
    app.session_interface = ClinicianSessionInterface(app.session_interface)
    for bp in (views.bp, account.bp, api.bp, invite.bp, reader.bp, members.bp):
        app.register_blueprint(bp)


__all__ = [
    "register",
]
