"""`/clinician/uploads`: the documents patients sent through upload links, by
reference, each downloaded as the OpenPGP message it arrived as (streamed from the
database one chunk at a time). The area's login, HTTPS rule and CSRF guard apply."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, flash, g, redirect, request, url_for

from ..clinician.inbox import REFERENCE
from ..errors import UserError
from ..localtime import shown
from ..uploads.held import HeldUploads
from ..uploads.links import MAX_NOTE, UploadLinks
from .clinician import views
from .common import services

bp = Blueprint("clinician_uploads", __name__, url_prefix="/clinician/uploads")
bp.before_request(views.guard)


def held() -> HeldUploads:
    s = services()
    return HeldUploads(s.settings, s.store)


@bp.app_template_global()
def documents_of(reference: str) -> int:
    """How many documents of `reference` the logged-in clinician may download: the
    inbox row's link to them (templates/clinician/_inbox_more.html). Counted once per
    request."""
    if "documents_by_reference" not in g:
        user = views.current_user()
        counts: dict[str, int] = {}
        for item in held().items(user) if user is not None else []:
            counts[item.reference] = counts.get(item.reference, 0) + 1
        g.documents_by_reference = counts
    return int(g.documents_by_reference.get(reference, 0))


@bp.get("/")
@views.login_required
def index() -> Any:
    """All the clinician's documents, or with ?reference= those of one submission (the
    inbox row's link), with the "ask for documents" form filled in for it."""
    user = views.current_user()
    assert user is not None  # noqa: S101 - login_required
    reference = request.args.get("reference", "").strip().upper()
    items = [i for i in held().items(user) if not reference or i.reference == reference]
    return views.page("clinician/uploads.html", items=items, error="",
                      reference=reference, email="", note="", only=reference,
                      max_note=MAX_NOTE)


@bp.post("/invite")
@views.login_required
def invite() -> Any:
    """"Ask for documents": mail a patient a one-time upload link, for a submission of
    the clinician's practice (by reference) or for a new patient of the practice."""
    user = views.current_user()
    assert user is not None  # noqa: S101 - login_required
    s = services()
    links = UploadLinks(s.settings, s.store, s.clock)
    reference = request.form.get("reference", "").strip().upper()
    email = request.form.get("email", "")
    note = request.form.get("note", "")
    lang = request.form.get("lang", "nl") if request.form.get("lang") in ("nl", "en") else "nl"
    actor = f"user:{user.username}"
    try:
        if reference:
            row = s.store.submissions.get(reference) if REFERENCE.match(reference) else None
            spec = s.settings.form(row["form_id"]) if row else None
            # the practice recorded with the submission, not the form id's owner today
            if spec is None or row is None or row["practice"] != user.practice or \
                    spec.practice != user.practice or spec.id not in s.accounts.forms_of(user):
                raise UserError("No submission %(reference)s of yours is kept here.",
                                reference=reference)
            made = links.for_submission(reference, email, lang, actor=actor,
                                        ip=views.client_ip(), note=note)
        else:
            made = links.for_practice(user.practice, email, lang, actor=actor,
                                      ip=views.client_ip(), note=note)
    except UserError as exc:
        errors = [m for ms in exc.errors.values() for m in ms] or [views.t(exc.message,
                                                                           **exc.params)]
        return views.page("clinician/uploads.html", 400, items=held().items(user),
                          error=" ".join(errors), reference=reference, email=email,
                          note=note, max_note=MAX_NOTE)
    tz = s.settings.practice_or_default(user.practice).timezone or s.settings.server.timezone
    flash(views.t("Upload link sent for %(reference)s; it works until %(date)s.",
                  reference=made.reference, date=shown(made.expires_at, tz)))
    return redirect(url_for("clinician_uploads.index"))


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
