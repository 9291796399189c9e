"""Security headers, set in this one place for every response.

`frame-ancestors` is 'none' everywhere except form pages, which list exactly the
form's `allowed_origins`; a strict CSP with no inline script; nosniff; HSTS over https;
`no-store` on anything that shows or takes answers (every page; only versioned static
files and the widget script, which set their own caching, are cached).

Referrer-Policy is `no-referrer`, except `same-origin` on form pages: with
`no-referrer` a browser sends `Origin: null` on the form's own POST, and the origin
check (protect.py) needs the real one. Nothing leaves for other sites either way.
"""

from __future__ import annotations

from flask import Flask, Response, g, request

# worker-src: the reader decrypts in a worker of its own origin (static/reader/decrypt.js)
CSP = ("default-src 'self'; script-src 'self'; worker-src 'self'; style-src 'self'; "
       "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'")


def allow_framing(origins: list[str]) -> None:
    """Called by a form view: this response may be framed by these origins."""
    g.frame_ancestors = origins


def frameable() -> list[str] | None:
    origins: list[str] | None = getattr(g, "frame_ancestors", None)
    return origins


def register(app: Flask) -> None:
    @app.after_request
    def set_headers(resp: Response) -> Response:
        origins = frameable()
        ancestors = " ".join(origins) if origins else "'none'"
        resp.headers["Content-Security-Policy"] = f"{CSP}; frame-ancestors {ancestors}"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        form_page = origins is not None  # set by the public blueprint on /f/<form_id>
        resp.headers["Referrer-Policy"] = "same-origin" if form_page else "no-referrer"
        resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        resp.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if not origins:
            resp.headers["X-Frame-Options"] = "DENY"
        if request.is_secure:
            resp.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if request.endpoint == "static" and request.args.get("v") and resp.status_code == 200:
            # asset_url() names the content's hash: the URL changes when the file does
            resp.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        elif request.endpoint != "static" and "Cache-Control" not in resp.headers:
            resp.headers["Cache-Control"] = "no-store"
        return resp
