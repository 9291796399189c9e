"""Small helpers every blueprint uses: the services, the language, rendering."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app, g, render_template, request
from werkzeug.exceptions import RequestTimeout

from ..config import PracticeSettings
from ..i18n import pick_language, translations
from ..intake.forms import field_attrs
from ..intake.relay import Relay
from ..intake.texts import text
from ..localtime import local_date, shown
from ..reload import Live
from ..services import Services
from ..store import parse_iso
from .request import BadForm


def services() -> Services:
    """The services in force: one request keeps those it started with, even when the
    configuration is reloaded meanwhile (reload.py)."""
    pinned: Services | None = g.get("formrelay_services")
    if pinned is None:
        live: Live = current_app.extensions["formrelay.live"]
        pinned = g.formrelay_services = live.current
    return pinned


def services_with_form(form_id: str) -> Services:
    """The services for a request about `form_id`: those it pinned, or - when they do
    not know the form - the newest ones, after any reload under way (reload.py
    `Live.newest`). So no request answers 404 for a form that exists in the old or the
    new configuration while a worker reloads."""
    pinned = services()
    if not form_id or form_id in pinned.settings.forms:
        return pinned
    live: Live = current_app.extensions["formrelay.live"]
    newest = g.formrelay_services = live.newest()
    return newest


def page_practice() -> PracticeSettings:
    """The practice a page speaks for: the one a view chose (g.practice), the form's in
    the URL, the signed-in clinician's, else the default practice."""
    settings = services().settings
    chosen: PracticeSettings | None = g.get("practice")
    if chosen is not None:
        return chosen
    form_id = (request.view_args or {}).get("form_id") if request else None
    if form_id and form_id in settings.forms:
        return settings.practice_of(form_id)
    user = g.get("user")
    if user is not None:
        return settings.practice_or_default(user.practice)
    return settings.default_practice


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
    spec = ctx.get("spec")
    if spec is not None:
        g.practice = services().settings.practice_of(spec.id)
    p = page_practice()
    return render_template(template, _=tr.gettext, lang=lang, practice_name=p.name,
                           field_attrs=field_attrs, text=lambda spec, key: text(spec, key, lang),
                           when=lambda dt: shown(_aware(dt), p.timezone),
                           on_date=lambda dt: local_date(_aware(dt), p.timezone),
                           practice_phone=p.phone, practice_email=p.email,
                           **ctx)
