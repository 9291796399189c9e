"""Every security and caching header, checked in one place (web/headers.py sets them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .conftest import post_form, valid_answers

SITE = "https://www.praktijk.example"
OTHER = "https://shop.praktijk.example:8443"


@pytest.fixture
def framed(make_app: Callable[..., Flask]) -> Flask:
    return make_app(allowed_origins=[SITE, OTHER])


def csp(resp: Any) -> dict[str, str]:
    out = {}
    for part in resp.headers["Content-Security-Policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        out[name] = value
    return out


def assert_strict_page(resp: Any, ancestors: str) -> None:
    policy = csp(resp)
    assert policy["frame-ancestors"] == ancestors
    assert policy["script-src"] == "'self'" and policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'" and policy["default-src"] == "'self'"
    assert "unsafe" not in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in resp.headers
    html = resp.get_data(as_text=True)
    # nothing the CSP would block: no inline script, handlers or style attributes
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html


def test_form_pages_may_be_framed_by_exactly_the_allowed_origins(framed: Flask) -> None:
    client = framed.test_client()
    for url in ("/f/intake", "/f/intake?embed=1&lang=en"):
        r = client.get(url)
        assert r.status_code == 200
        assert_strict_page(r, f"{SITE} {OTHER}")
        assert "X-Frame-Options" not in r.headers
        # same-origin: the form's own POST then carries its real Origin (not "null")
        assert r.headers["Referrer-Policy"] == "same-origin"


def test_answers_are_never_cached(framed: Flask) -> None:
    client = framed.test_client()
    thanks = post_form(client, valid_answers(), query="?embed=1")
    assert thanks.status_code == 200 and "FR-" in thanks.get_data(as_text=True)
    assert_strict_page(thanks, f"{SITE} {OTHER}")
    errors = post_form(client, {**valid_answers(), "name": ""}, query="?embed=1")
    assert errors.status_code == 400
    assert_strict_page(errors, f"{SITE} {OTHER}")


def test_form_without_allowed_origins_cannot_be_framed(client: FlaskClient) -> None:
    r = client.get("/f/intake?embed=1")
    assert_strict_page(r, "'none'")
    assert r.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("url", ["/healthz", "/nope", "/f/nope"])
def test_other_pages_cannot_be_framed_and_send_no_referrer(framed: Flask, url: str) -> None:
    r = framed.test_client().get(url)
    assert csp(r)["frame-ancestors"] == "'none'"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cache-Control"] == "no-store"


def test_hsts_only_over_https(make_app: Callable[..., Flask]) -> None:
    app = make_app(server={"base_url": "https://forms.praktijk.example"})
    client = app.test_client()
    secure = client.get("/f/intake", base_url="https://forms.praktijk.example")
    hsts = secure.headers["Strict-Transport-Security"]
    assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 365 * 86400
    assert "Strict-Transport-Security" not in client.get("/f/intake").headers


def test_widget_script_is_cached_by_version(client: FlaskClient) -> None:
    r = client.get("/widget.js")
    assert r.status_code == 200 and r.mimetype == "text/javascript"
    assert "data-formrelay" in r.get_data(as_text=True)
    assert r.headers["Cache-Control"].startswith("public, max-age=86400")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert "Set-Cookie" not in r.headers
    etag = r.headers["ETag"]
    again = client.get("/widget.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    pinned = client.get(f"/widget.js?v={etag.strip(chr(34))}")
    assert pinned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    stale = client.get("/widget.js?v=old")
    assert "immutable" not in stale.headers["Cache-Control"]


def test_form_page_assets_are_versioned(client: FlaskClient) -> None:
    html = client.get("/f/intake").get_data(as_text=True)
    urls = re.findall(r'(?:href|src)="(/(?:static/[^"]+|theme\.css[^"]*))"', html)
    assert {u.split("?")[0] for u in urls} >= {"/static/form.css", "/static/frame.js",
                                                "/theme.css"}
    for url in urls:
        r = client.get(url.replace("&amp;", "&"))
        r.get_data()
        assert r.status_code == 200
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable", url
        assert "Set-Cookie" not in r.headers
        r.close()  # a static file is streamed from disk
