"""The public form: GET shows it, POST hands it to the relay and shows the receipt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, jsonify, request

from ..errors import InvalidSubmission
from ..i18n import gettext
from ..intake import forms
from ..intake.tokens import TokenProblem
from ..settings import FormSpec
from . import protect
from .common import language, posted_language, relay, render, services_with_form, wants_json
from .errors import respond
from .headers import allow_framing

bp = Blueprint("public", __name__)


def _page(form_id: str, lang: str, form: Any, status: int = 200,
          errors: dict[str, list[str]] | None = None, message: str = "",
          shown_at: datetime | None = None) -> Any:
    spec = relay().form(form_id)
    allow_framing(spec.allowed_origins)
    html = render("form.html", lang, spec=spec, form=form, errors=errors or {},
                  message=message, embed=request.args.get("embed") == "1",
                  token=protect.issue_token(spec.id, shown_at))
    return html, status


def _kept(spec: FormSpec, lang: str) -> Any:
    """The form filled with what the patient sent (files cannot be sent back)."""
    names = {f.name for f in spec.fields}
    return forms.empty_form(spec, lang, {k: v for k, v in request.form.lists() if k in names})


@bp.before_request
def frame_form_pages() -> None:
    """Form pages (and their error and 429 answers) may be framed by the form's sites.
    A form the request's services do not know may be in a configuration being loaded:
    the request then waits for it (common.services_with_form)."""
    form_id = (request.view_args or {}).get("form_id", "")
    spec = services_with_form(form_id).settings.form(form_id)
    if spec is not None:
        allow_framing(spec.allowed_origins)


@bp.get("/f/<form_id>")
def show(form_id: str) -> Any:
    r = relay()
    spec = r.form(form_id)
    lang = language(spec.lang)
    if r.form_problems(spec):
        r.require_available(spec)
    return _page(form_id, lang, forms.empty_form(spec, lang))


@bp.post("/f/<form_id>")
def submit(form_id: str) -> Any:
    r = relay()
    spec = r.form(form_id)
    protect.check_origin(spec)
    r.require_available(spec)  # an unusable key says "call the practice" before anything
    lang = posted_language(spec.lang)
    shown_at: datetime | None = None
    try:
        token = protect.check_post(spec)
        shown_at = token.shown_at
        try:
            # the core takes plain mappings of lists; a FileStorage is a forms.PostedFile
            receipt = r.submit(form_id, lang, request.form.to_dict(flat=False),
                               request.files.to_dict(flat=False), ip=request.remote_addr or "",
                               token=protect.first_use(token))
        except TokenProblem as exc:  # another post of this token was stored meanwhile
            raise protect.send_again(spec, exc) from None
    except protect.SendAgain as exc:
        message = exc.message(lang)
        if any(f.filename for f in request.files.values()):
            message += " " + gettext(lang, "Please add your attachments again.")
        if wants_json():
            return respond(400, message, lang=lang)
        return _page(form_id, lang, _kept(spec, lang), 400, message=message,
                     shown_at=exc.shown_at)
    except InvalidSubmission as exc:
        message = gettext(lang, exc.message, **exc.params)
        if wants_json():  # in the language the form was filled in (its _lang)
            return respond(exc.status, message, exc.errors, lang=lang)
        return _page(form_id, lang, _kept(spec, lang), exc.status, exc.errors, message,
                     shown_at=shown_at)
    if wants_json():
        answer: dict[str, Any] = {"ok": True, "reference": receipt.reference}
        if receipt.copy is not None:
            answer["public_copy"] = receipt.copy.as_json()
        code = receipt.reply_code
        if code:  # null: received, but no code could be made (the page says call them)
            answer["reply_code"] = None if code == "-" else code
        return jsonify(answer)
    return render("thanks.html", lang, spec=spec, receipt=receipt,
                  embed=request.args.get("embed") == "1",
                  reply_code=receipt.reply_code)
