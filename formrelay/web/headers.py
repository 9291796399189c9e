"""Security headers, set in this one place for every response.

`frame-ancestors` is 'none' everywhere except form pages, which list exactly the
form's `allowed_origins`; a strict CSP with no inline script; nosniff; no referrer;
HSTS over https; `no-store` on anything that shows or takes answers.
"""

from __future__ import annotations

from flask import Flask, Response, g, request

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'")


def allow_framing(origins: list[str]) -> None:
    """Called by a form view: this response may be framed by these origins."""
    g.frame_ancestors = origins


def register(app: Flask) -> None:
    @app.after_request
    def set_headers(resp: Response) -> Response:
        origins = getattr(g, "frame_ancestors", None)
        ancestors = " ".join(origins) if origins else "'none'"
        resp.headers["Content-Security-Policy"] = f"{CSP}; frame-ancestors {ancestors}"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        resp.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if not origins:
            resp.headers["X-Frame-Options"] = "DENY"
        if request.is_secure:
            resp.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if request.endpoint and not request.endpoint.startswith("static") \
                and "Cache-Control" not in resp.headers:
            resp.headers["Cache-Control"] = "no-store"
        return resp
