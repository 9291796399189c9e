"""The embed script (`GET /widget.js`), the practice's theme (`GET /theme.css`) and the
versioned URLs of the form page's own static files.

widget.js is `widgets/formrelay.js`, served as it is: no dependencies, no cookies, no
tracking. Web builders paste the plain `/widget.js` URL, so that answer is cached for a
day and revalidated by its ETag (a hash of the content); `/widget.js?v=<hash>` (the
pinned variant the README also shows) is cached for a year. Templates get
`asset_url()` (static files with `?v=<hash>`, cached for a year by headers.py),
`asset_integrity()` (their Subresource Integrity value),
`theme_url`, `embed` and `frame_origins` (who may receive the frame's size messages).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, url_for

from .. import theme
from ..i18n import gettext
from .common import language, page_practice, relay
from .protect import origin_of

bp = Blueprint("widget", __name__)
log = logging.getLogger("formrelay.web")

PACKAGE = Path(__file__).resolve().parent.parent
# formrelay/widgets/formrelay.js links to the repository's widgets/formrelay.js; a
# wheel carries the file itself, so both a checkout and an installed package find it.
WIDGET_PATHS = (PACKAGE / "widgets" / "formrelay.js",)
DAY, YEAR = 86400, 365 * 86400


@functools.cache
def widget_source() -> tuple[bytes, str]:
    for path in WIDGET_PATHS:
        if path.is_file():
            data = path.read_bytes()
            return data, hashlib.sha256(data).hexdigest()[:16]
    looked = ", ".join(map(str, WIDGET_PATHS))
    raise FileNotFoundError(f"widget script not found; looked in {looked}")


@functools.cache
def _static_version(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


@functools.cache
def _static_integrity(path: str) -> str:
    digest = hashlib.sha384(Path(path).read_bytes()).digest()
    return "sha384-" + base64.b64encode(digest).decode("ascii")


def asset_integrity(filename: str) -> str:
    """The Subresource Integrity value of a static file: every <script> carries one, so
    a script changed on the way (or on disk, after start) is not run."""
    folder = current_app.static_folder or ""
    return _static_integrity(str(Path(folder) / filename))


def openpgp_file() -> str:
    """The vendored OpenPGP.js, as a static file name (static/vendor/openpgp.json, written
    by scripts/vendor_openpgp.py, names the file of the recorded release)."""
    record = Path(current_app.static_folder or "") / "vendor" / "openpgp.json"
    return "vendor/" + str(json.loads(record.read_text(encoding="utf-8"))["file"])


def asset_url(filename: str) -> str:
    folder = current_app.static_folder or ""
    return url_for("static", filename=filename, v=_static_version(str(Path(folder) / filename)))


def _cached(resp: Response, etag: str, pinned: bool) -> Response:
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = (f"public, max-age={YEAR}, immutable" if pinned else
                                     f"public, max-age={DAY}, stale-while-revalidate={DAY}")
    # Host pages may set Cross-Origin-Embedder-Policy; the script is meant for them.
    resp.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    resp.make_conditional(request)  # 304 when the browser's copy is current
    return resp


@bp.get("/widget.js")
def widget_js() -> Response:
    data, digest = widget_source()
    resp = Response(data, mimetype="text/javascript")
    return _cached(resp, digest, request.args.get("v") == digest)


@bp.get("/f/<form_id>/embed.json")
def embed_check(form_id: str) -> Response:
    """May the page asking (its Origin) frame this form? widget.js asks only when a frame
    stayed silent: for a page not in allowed_origins it shows, instead of the browser's
    grey error, the practice's phone and a link that opens the form in a new tab."""
    spec = relay().form(form_id)
    # no Origin: a request from formrelay's own pages
    asking = origin_of(request.headers.get("Origin", "")) or \
        origin_of(relay().settings.server.base_url)
    allowed = asking in {origin_of(o) for o in spec.allowed_origins}
    body: dict[str, Any] = {"allowed": allowed}
    if not allowed:
        lang = language()
        p = relay().settings.practice_of(form_id)
        body.update(
            text=gettext(lang, "This form cannot be shown on this page."),
            open=gettext(lang, "Open the form in a new tab"),
            url=url_for("public.show", form_id=form_id, lang=lang, _external=True),
            call=gettext(lang, "Or call %(practice)s:", practice=p.name), phone=p.phone,
            # for the web builder in the browser's console, never shown to the patient
            console=f"formrelay: form {form_id!r} cannot be framed by {asking}: add "
                    f"{asking!r} to the form's allowed_origins in the formrelay "
                    "configuration",
        )
    log.info("widget for form %s on %s: %s", form_id, asking,
             "allowed" if allowed else "not in allowed_origins")
    resp = jsonify(body)
    resp.headers["Access-Control-Allow-Origin"] = "*"
    resp.headers["Vary"] = "Origin"
    return resp


@bp.get("/theme.css")
def theme_css() -> Response:
    # each practice's own look: ?practice=<id> (page_context links it); else [theme]
    settings = relay().settings
    p = settings.practice(request.args.get("practice", ""))
    t = p.theme if p is not None else settings.theme
    version = theme.version(t)
    resp = Response(theme.stylesheet(t), mimetype="text/css")
    return _cached(resp, version, request.args.get("v") == version)


def register(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def page_context() -> dict[str, Any]:
        p = page_practice()
        origins = getattr(g, "frame_ancestors", None) or []
        # a page of no practice (common.page_practice) wears the default look
        t = p.theme if p is not None else relay().settings.theme
        return {"asset_url": asset_url, "asset_integrity": asset_integrity,
                "embed": request.args.get("embed") == "1",
                "frame_origins": origins,
                "theme_url": url_for("widget.theme_css", practice=p.id if p else None,
                                     v=theme.version(t))}
