"""Small helpers every blueprint uses: the services, the language, rendering."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app, render_template, request
from werkzeug.exceptions import RequestTimeout

from ..i18n import pick_language, translations
from ..intake.forms import field_attrs
from ..intake.relay import Relay
from ..intake.texts import text
from ..localtime import local_date, shown
from ..services import Services
from ..store import parse_iso
from .request import BadForm


def services() -> Services:
    s: Services = current_app.extensions["formrelay"]
    return s


def relay() -> Relay:
    return services().relay


def language(default: str = "nl") -> str:
    try:
        chosen = request.values.get("_lang")
    # an error page (404, 408, 429) for a body that cannot be read or came too slowly
    # (request.py, slowbody.py): the query string only
    except (BadForm, RequestTimeout):
        chosen = None
    return pick_language(chosen or request.args.get("lang"), default)


def wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > \
        request.accept_mimetypes["text/html"]


def _aware(value: datetime | str) -> datetime:
    """A stored time (datetime, or the store's ISO text) for `when` and `on_date`."""
    return parse_iso(value) if isinstance(value, str) else value


def render(template: str, lang: str, **ctx: Any) -> str:
    tr = translations(lang)
    s = relay().settings.server
    return render_template(template, _=tr.gettext, lang=lang, practice_name=s.practice_name,
                           field_attrs=field_attrs, text=lambda spec, key: text(spec, key, lang),
                           when=lambda dt: shown(_aware(dt), s.timezone),
                           on_date=lambda dt: local_date(_aware(dt), s.timezone),
                           practice_phone=s.practice_phone, practice_email=s.practice_email,
                           **ctx)
