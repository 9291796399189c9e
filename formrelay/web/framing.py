"""Requests whose framing no browser sends are refused (400) before any view runs.

* A body on GET or HEAD: it has no meaning there (RFC 9110 9.3.1), and a proxy in front
  that ignores it while this server reads it, or the other way round, no longer agrees
  where the next request starts (request smuggling). No page of formrelay takes one.
* HTTP/1.1 without a Host header: RFC 9112 3.2 says the server must answer 400.
  HTTP/1.0 has no Host header and is served as before.

Other malformed requests are gunicorn's to refuse before the app (two Content-Length
headers, Content-Length with Transfer-Encoding, over-long lines, too many headers) or
are met when the body is read (web/slowbody.py, web/request.py).
"""

from __future__ import annotations

from flask import Flask, request

from .request import BadForm

_BODILESS = frozenset({"GET", "HEAD"})


def _has_body() -> bool:
    return bool(request.content_length) or "Transfer-Encoding" in request.headers


def refuse_bad_framing() -> None:
    if request.method in _BODILESS and _has_body():
        raise BadForm(400, f"a body on {request.method}", "The request could not be read. "
                      "Please reload the page and try again.")
    if request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and not request.headers.get("Host"):
        raise BadForm(400, "HTTP/1.1 without Host", "The request could not be read. "
                      "Please reload the page and try again.")


def register(app: Flask) -> None:
    app.before_request(refuse_bad_framing)
