"""`/r/`: the patient reads the practice's answer with their reference and reply code;
`/clinician/answer/<reference>`: a clinician writes it.

The patient's page never says whether a reference exists: an unknown, expired or
locked one and a wrong code for it look alike except for the count of tries left,
which only a real reference has. The clinician's answer passes through this request's
memory once and is encrypted to the patient's reply key before anything is stored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, Response, flash, g, redirect, request, url_for

from ..errors import UserError
from ..i18n import gettext
from ..replies import letter
from ..replies.answers import MAX_FAILURES, Answers, ReplyRefused, ReplyState
from ..replies.letter import Letter
from .clinician import views
from .common import language, posted_language, relay, render, services
from .uploads import no_store
from .widget import openpgp_file

bp = Blueprint("replies", __name__)
# what the answer page tells (and its script checks) before anything is encrypted
LIMITS: dict[str, Any] = {"max_files": letter.MAX_FILES, "types": letter.TYPES,
                          "max_mb": letter.MAX_FILES_BYTES // (1024 * 1024)}
clinician_bp = Blueprint("clinician_replies", __name__, url_prefix="/clinician/answer")
clinician_bp.before_request(views.guard)


def answers() -> Answers:
    s = services()
    return Answers(s.settings, s.store, s.clock)


def _page(lang: str, *, reference: str = "", error: str = "", answer: Letter | None = None,
          status: int = 200, code: str = "", sent: str = "") -> Response:
    can_reply = answer is not None and answers().can_reply(reference)
    html = render("reply.html", lang, reference=reference, error=error,
                  answer=answer.text if answer else "", files=answer.files if answer else [],
                  refused=answer.refused if answer else 0,
                  file_code=code if answer and answer.files else "",
                  code=code if can_reply else "", sent=sent,
                  other_lang="en" if lang == "nl" else "nl")
    return no_store(Response(html, status, mimetype="text/html"))


@bp.get("/r/")
def ask() -> Any:
    return _page(language(), reference=request.args.get("reference", "")[:20])


@bp.post("/r/")
def read() -> Any:
    lang = posted_language(language())
    reference = request.form.get("reference", "").strip().upper()[:20]
    code = request.form.get("code", "")
    try:
        text = answers().read(reference, code, ip=request.remote_addr or "")
    except ReplyRefused as exc:
        return _refused(exc, lang, reference)
    return _page(lang, reference=reference, answer=text, code=code)


@bp.post("/r/file")
def file() -> Any:
    """One file of the answer, for the right code (checked again: the page holds no
    key). Its type was checked by its first bytes when the answer was opened."""
    lang = posted_language(language())
    reference = request.form.get("reference", "").strip().upper()[:20]
    try:
        opened = answers().read(reference, request.form.get("code", ""),
                                ip=request.remote_addr or "")
    except ReplyRefused as exc:
        return _refused(exc, lang, reference)
    n = request.form.get("n", "")
    if not n.isdigit() or int(n) >= len(opened.files):
        return _page(lang, reference=reference, status=404,
                     error=gettext(lang, "This file is not part of the answer."))
    f = opened.files[int(n)]
    resp = Response(f.data, mimetype="application/octet-stream")
    resp.headers["Content-Disposition"] = content_disposition(f.name)
    return no_store(resp)


@bp.post("/r/reply")
def reply() -> Any:
    """The patient's one reply, delivered like a new submission."""
    lang = posted_language(language())
    reference = request.form.get("reference", "").strip().upper()[:20]
    try:
        new = answers().patient_reply(relay(), reference, request.form.get("code", ""),
                                      request.form.get("reply", ""),
                                      ip=request.remote_addr or "")
    except ReplyRefused as exc:
        return _refused(exc, lang, reference)
    except UserError as exc:
        return _page(lang, reference=reference, status=exc.status,
                     error=gettext(lang, exc.message, **exc.params))
    return _page(lang, reference=reference, sent=new)


def content_disposition(name: str) -> str:
    """An attachment header for any file name: an ASCII fallback and the UTF-8 name."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_"
                       for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _refused(exc: ReplyRefused, lang: str, reference: str) -> Response:
    if exc.practice:
        g.practice = services().settings.practice_or_default(exc.practice)
    messages = {
        ReplyState.NONE: "No answer can be shown for this reference and code. Check "
                         "both, or call the practice.",
        ReplyState.WRONG_CODE: "This reply code is not right. Tries left before the "
                               "answer is locked: %(n)s.",
        ReplyState.LOCKED: f"The wrong reply code was entered {MAX_FAILURES} times, so "
                           "the answer was deleted to protect it. Call the practice.",
        ReplyState.NOT_YET: "The practice has not answered yet. You will get an e-mail "
                            "when it does, if you gave your address.",
        ReplyState.BUSY: "The server is too busy to check reply codes just now. Wait a "
                         "minute and try again; nothing was counted against your code.",
    }
    status = {ReplyState.NONE: 404, ReplyState.WRONG_CODE: 403, ReplyState.LOCKED: 403,
              ReplyState.NOT_YET: 200, ReplyState.BUSY: 429}[exc.state]
    resp = _page(lang, reference=reference, status=status,
                 error=gettext(lang, messages[exc.state], n=exc.tries_left))
    if exc.state == ReplyState.BUSY:
        resp.headers["Retry-After"] = "60"
    return resp


@clinician_bp.app_template_global()
def may_answer(reference: str) -> bool:
    """Whether the logged-in clinician can write the answer to `reference` (the
    inbox row's link, templates/clinician/_inbox_more.html)."""
    user = views.current_user()
    return user is not None and answers().may_answer(user, reference) is not None


@clinician_bp.route("/<reference>", methods=["GET", "POST"])
@views.login_required
def write(reference: str) -> Any:
    user = views.current_user()
    assert user is not None  # noqa: S101 - login_required
    a = answers()
    if a.may_answer(user, reference) is None:
        return views.page("clinician/answer.html", 404, reference=reference, allowed=False)
    row = a.may_answer(user, reference)
    assert row is not None  # noqa: S101 - checked above
    if request.method == "POST":
        sealed = request.files.get("answer_pgp")
        try:
            if sealed is not None and sealed.filename:  # encrypted in this browser
                a.answer_sealed(user, reference, sealed.read(letter.MAX_SEALED + 1),
                                ip=views.client_ip())
            else:  # without JavaScript: the server encrypts it at once
                files = [(f.filename or "", f.read(letter.MAX_FILES_BYTES + 1))
                         for f in request.files.getlist("files") if f.filename]
                a.answer(user, reference, request.form.get("answer", ""), files,
                         ip=views.client_ip())
        except UserError as exc:
            return views.page("clinician/answer.html", exc.status, reference=reference,
                              allowed=True, certificate=a.certificate(row),
                              openpgp=openpgp_file(),
                              error=views.t(exc.message, **exc.params), **LIMITS)
        flash(views.t("Your answer to %(reference)s was encrypted for the patient.",
                      reference=reference))
        return redirect(url_for("clinician.inbox"))
    return views.page("clinician/answer.html", reference=reference, allowed=True,
                      certificate=a.certificate(row), error="", openpgp=openpgp_file(),
                      **LIMITS)


def register(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(clinician_bp)
