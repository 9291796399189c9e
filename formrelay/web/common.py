"""Small helpers every blueprint uses: the services, the language, rendering."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app, g, render_template, request

from ..i18n import DEFAULT_LANG, pick_language, translations
from ..intake.forms import field_attrs
from ..intake.relay import Relay
from ..intake.texts import text
from ..localtime import answer_date, local_date, parse_iso, shown
from ..reload import Live
from ..services import Services
from ..settings import DEFAULT_PRACTICE, LANGUAGES, PracticeSettings


def services() -> Services:
    """The services in force: one request keeps those it started with, even when the
    configuration is reloaded meanwhile (reload.py).

    The one way for web code to reach them (as flaskr's `get_db()`): never
    `app.extensions["formrelay"]`, which holds the services as first built and so the
    settings from before any reload."""
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


def page_practice() -> PracticeSettings | None:
    """The practice a page speaks for: the one a view chose (g.practice), the form's in
    the URL, the signed-in clinician's, else the default practice (the operator's own,
    [server] practice_name). An instance whose practices all come from practice files has
    none: a page of no practice (the clinician login, /f/nope, a broken copy link) then
    names none, rather than one practice's name and phone to another's patients."""
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
    if settings.practices and DEFAULT_PRACTICE not in settings.practices:
        return None
    return settings.default_practice


def relay() -> Relay:
    return services().relay


def language(default: str | None = None) -> str:
    """The language of a page: the query string's `lang`, else `default` (a view that
    knows the page's own, a patient copy's), else that of the form in the URL, else the
    browser's Accept-Language, else Dutch.

    Never the body: an error page is also the answer to a body that cannot be read (a
    broken chunked encoding, one cut off, one too large), and reading it again for the
    language would fail the error page itself."""
    if default is None:
        form_id = (request.view_args or {}).get("form_id")
        spec = services().settings.form(form_id) if form_id else None
        default = spec.lang if spec is not None else \
            request.accept_languages.best_match(LANGUAGES) or DEFAULT_LANG
    return pick_language(request.args.get("lang"), default)


def posted_language(default: str) -> str:
    """The language a posted form was filled in: its `_lang` field (the widget's and the
    scripted posts carry it there), else as `language`. For a view that reads the form
    anyway; a body that cannot be read raises its own 4xx here, answered by errors.py."""
    return pick_language(request.form.get("_lang"), language(default))


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
    settings = services().settings
    if spec is not None:
        g.practice = settings.practice_of(spec.id)
    p = page_practice()
    tz = p.timezone if p is not None else settings.server.timezone
    return render_template(template, _=tr.gettext, lang=lang,
                           practice_name=p.name if p else "",
                           field_attrs=field_attrs, text=lambda spec, key: text(spec, key, lang),
                           when=lambda dt: shown(_aware(dt), tz, lang),
                           on_date=lambda dt: local_date(_aware(dt), tz, lang),
                           date_example=answer_date("1980-05-17", lang),
                           practice_phone=p.phone if p else "",
                           practice_email=p.email if p else "",
                           **ctx)
