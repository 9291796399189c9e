"""The public form: GET shows it, POST hands it to the relay and shows the receipt."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from .. import forms
from ..errors import FormUnavailable, InvalidSubmission
from ..i18n import gettext
from .common import language, relay, render, wants_json
from .headers import allow_framing

bp = Blueprint("public", __name__)


def _page(form_id: str, lang: str, form: Any, status: int = 200,
          errors: dict[str, list[str]] | None = None, message: str = "") -> Any:
    spec = relay().form(form_id)
    allow_framing(spec.allowed_origins)
    html = render("form.html", lang, spec=spec, form=form, errors=errors or {},
                  message=message, embed=request.args.get("embed") == "1")
    return html, status


@bp.get("/f/<form_id>")
def show(form_id: str) -> Any:
    r = relay()
    spec = r.form(form_id)
    lang = language(spec.lang)
    allow_framing(spec.allowed_origins)
    if r.form_problems(spec):
        r.require_available(spec)
    return _page(form_id, lang, forms.empty_form(spec, lang))


@bp.post("/f/<form_id>")
def submit(form_id: str) -> Any:
    r = relay()
    spec = r.form(form_id)
    lang = language(spec.lang)
    allow_framing(spec.allowed_origins)
    try:
        receipt = r.submit(form_id, lang, request.form, request.files,
                           ip=request.remote_addr or "")
    except InvalidSubmission as exc:
        if wants_json():
            raise
        kept = {k: v for k, v in request.form.items(multi=True) if k in
                {f.name for f in spec.fields}}
        form = forms.empty_form(spec, lang, kept)
        return _page(form_id, lang, form, 400, exc.errors, gettext(lang, exc.message))
    except FormUnavailable:
        raise
    if wants_json():
        return jsonify({"ok": True, "reference": receipt.reference,
                        **{k: v for k, v in receipt.extras.items() if k.startswith("public_")}})
    return render("thanks.html", lang, spec=spec, receipt=receipt,
                  embed=request.args.get("embed") == "1")
