"""`/clinician/uploads`: the documents patients sent through upload links, by
reference, each downloaded as the OpenPGP message it arrived as (streamed from the
database one chunk at a time). The area's login, HTTPS rule and CSRF guard apply."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response

from ..uploads.held import HeldUploads
from .clinician import views
from .common import services

bp = Blueprint("clinician_uploads", __name__, url_prefix="/clinician/uploads")
bp.before_request(views.guard)


def held() -> HeldUploads:
    s = services()
    return HeldUploads(s.settings, s.store)


@bp.get("/")
@views.login_required
def index() -> Any:
    user = views.current_user()
    assert user is not None  # noqa: S101 - login_required
    return views.page("clinician/uploads.html", items=held().items(user))


@bp.get("/<file_id>")
@views.login_required
def download(file_id: str) -> Any:
    user = views.current_user()
    assert user is not None  # noqa: S101 - login_required
    item, chunks = held().download(user, file_id, views.client_ip())
    resp = Response(chunks, mimetype="application/pgp-encrypted")
    resp.headers["Content-Disposition"] = f'attachment; filename="{item.filename}"'
    resp.headers["Content-Length"] = str(item.size)
    return resp


def register(app: Flask) -> None:
    app.register_blueprint(bp)
