"""`/u/<token>`: the upload page and its small chunked-upload protocol.

GET shows the page (the practice's look, nl/en, one column that fits 360 px): the
link's recipients' public keys for static/upload.js to encrypt to, the accepted types
and the session's limit, and a plain form that works without JavaScript (small files,
encrypted on the server with gpg). The protocol the script speaks (uploads/receive.py
explains it):

* `POST /u/<token>/files` `{"size": n}` -> 201 `{"id": ..., "offset": 0}`
* `PATCH /u/<token>/files/<id>` with `Upload-Offset` and `Upload-Checksum: sha256 <hex>`
  -> 204 and the new `Upload-Offset`; 409 and the stored offset when it does not fit
* `HEAD` (or GET) `/u/<token>/files/<id>` -> `Upload-Offset`: where to resume
* `POST /u/<token>/files/<id>/done` `{"length": n, "chunks": k}` -> the file is whole
* `POST /u/<token>/done` ends the session (the link works no more).

JSON errors are `{"ok": false, "error": ...}`; pages are calm and name the practice.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request

from ..i18n import gettext
from ..localtime import shown
from ..store import CHUNK
from ..uploads.links import LinkRefused, UploadLink
from ..uploads.receive import OffsetMismatch, Receiver, UploadRefused, UploadUnavailable
from .common import language, render, services
from .uploads import gone_page, links, no_store

bp = Blueprint("upload_pages", __name__)
SHA256_HEX = re.compile(r"[0-9A-Fa-f]{64}")


def receiver() -> Receiver:
    s = services()
    return Receiver(s.settings, s.store, s.keyring, s.clock)


def _ip() -> str:
    return request.remote_addr or ""


def _open(token: str) -> UploadLink:
    link = links().open(token)
    g.practice = services().settings.practice_or_default(link.practice)
    return link


def _api() -> bool:
    return "/files" in request.path


@bp.errorhandler(LinkRefused)
def _refused_link(exc: LinkRefused) -> Response:
    if _api():
        return _json_error(410 if exc.state != "altered" else 404,
                           gettext(language(exc.lang or "nl"), "This link does not work"))
    return gone_page(exc)


@bp.errorhandler(UploadUnavailable)
def _unavailable(exc: UploadUnavailable) -> Response:
    lang = language()
    message = gettext(lang, "The practice cannot receive documents right now. Please call "
                            "the practice.")
    if _api():
        return _json_error(503, message)
    html = render("copy_gone.html", lang, title=gettext(lang, "Temporarily unavailable"),
                  message=message)
    resp = no_store(Response(html, 503, mimetype="text/html"))
    resp.headers["Retry-After"] = "3600"
    return resp


@bp.errorhandler(UploadRefused)
def _refused_upload(exc: UploadRefused) -> Response:
    lang = language()
    return _json_error(exc.status, gettext(lang, exc.message, **exc.params))


def _json_error(status: int, message: str) -> Response:
    resp = jsonify({"ok": False, "error": message})
    resp.status_code = status
    return no_store(resp)


def _page(token: str, link: UploadLink, lang: str, *, status: int = 200, received: int = 0,
          error: str = "") -> Response:
    r = receiver()
    practice = g.practice
    html = render("upload.html", lang, token=token, keys=r.public_keys(link),
                  types=r.allowed_types(link), left_mb=r.left(link) // (1024 * 1024),
                  plain_mb=services().settings.server.max_request_mb, chunk=CHUNK,
                  reference=link.reference, received=received, error=error, note=link.note,
                  expires=shown(link.expires_at, practice.timezone or
                                services().settings.server.timezone),
                  other_lang="en" if lang == "nl" else "nl")
    return no_store(Response(html, status, mimetype="text/html"))


@bp.get("/u/<token>")
def show(token: str) -> Any:
    link = _open(token)
    receiver().check_reserve()
    return _page(token, link, language(link.lang))


@bp.post("/u/<token>")
def plain_post(token: str) -> Any:
    """The no-JavaScript way: an ordinary multipart post, encrypted here with gpg."""
    link = _open(token)
    lang = language(link.lang)
    posted = [f for f in request.files.getlist("files") if f.filename]
    if not posted:
        return _page(token, link, lang, status=400,
                     error=gettext(lang, "Choose one or more files first."))
    try:
        got = receiver().form_files(link, [(f.filename or "", f.stream) for f in posted],
                                    lang, ip=_ip())
    except UploadRefused as exc:
        return _page(token, link, lang, status=exc.status,
                     error=gettext(lang, exc.message, **exc.params))
    return _page(token, link, lang, received=len(got))


@bp.post("/u/<token>/done")
def done(token: str) -> Any:
    link = _open(token)
    lang = language(link.lang)
    n = links().close(link, ip=_ip())
    html = render("upload_done.html", lang, n=n, reference=link.reference)
    return no_store(Response(html, 200, mimetype="text/html"))


@bp.post("/u/<token>/files")
def create(token: str) -> Any:
    link = _open(token)
    body = request.get_json(silent=True) or {}
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise UploadRefused("The file size is missing.")
    file_id = receiver().start(link, size, ip=_ip())
    resp = jsonify({"ok": True, "id": file_id, "offset": 0, "chunk": CHUNK})
    resp.status_code = 201
    return no_store(resp)


def _offset_header(resp: Response, offset: int) -> Response:
    resp.headers["Upload-Offset"] = str(offset)
    return no_store(resp)


@bp.get("/u/<token>/files/<file_id>")  # and HEAD, which the page uses
def where(token: str, file_id: str) -> Any:
    link = _open(token)
    return _offset_header(Response(status=200), receiver().offset(link, file_id))


@bp.route("/u/<token>/files/<file_id>", methods=["PATCH"])
def append(token: str, file_id: str) -> Any:
    link = _open(token)
    try:
        offset = int(request.headers.get("Upload-Offset", ""))
    except ValueError:
        raise UploadRefused("Upload-Offset is missing.") from None
    checksum = request.headers.get("Upload-Checksum", "")
    algo, _, digest = checksum.partition(" ")
    digest = digest.strip()
    if checksum and (algo.lower() != "sha256" or not SHA256_HEX.fullmatch(digest)):
        # a header is any latin-1 text: only hex digits go on to the comparison
        raise UploadRefused("Upload-Checksum must be 'sha256' and 64 hex digits.")
    try:
        size = receiver().append(link, file_id, offset, request.get_data(cache=False),
                                 digest, ip=_ip())
    except OffsetMismatch as exc:
        resp = jsonify({"ok": False, "error": "offset", "offset": exc.offset})
        resp.status_code = 409
        return _offset_header(resp, exc.offset)
    return _offset_header(Response(status=204), size)


@bp.route("/u/<token>/files/<file_id>", methods=["DELETE"])
def abandon(token: str, file_id: str) -> Any:
    """tus's termination: the page drops an unfinished file to send it again (after a
    reload its encryption cannot continue where it stopped)."""
    receiver().abandon(_open(token), file_id, ip=_ip())
    return Response(status=204)


@bp.post("/u/<token>/files/<file_id>/done")
def finish(token: str, file_id: str) -> Any:
    link = _open(token)
    body = request.get_json(silent=True) or {}
    length, chunks = body.get("length"), body.get("chunks")
    if not isinstance(length, int) or not isinstance(chunks, int):
        raise UploadRefused("length and chunks are needed.")
    got = receiver().finish(link, file_id, length, chunks, ip=_ip())
    return no_store(jsonify({"ok": True, "id": got.file_id, "size": got.size}))


def register(app: Flask) -> None:
    app.register_blueprint(bp)
