"""Posts a browser never sends (a part without a name, bytes that are not UTF-8, a
checkbox value sent 120,000 times, 5,000 fields) get a clear 400 or 413 that says what
is wrong, for the browser and for the widget; nothing is stored, queued or logged. A
select starts on an empty "Kies…" option, so a skipped question sends no answer."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient

from formrelay.store import Store

from .conftest import (
    ORIGIN,
    canary,
    encode_multipart,
    form_token,
    make_config_dict,
    open_store,
    post_form,
    valid_answers,
    write_config,
)
from .helpers.servers import _hidden, _http, gunicorn
from .keys import TestKey
from .smtpd import free_port

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

BOUNDARY = "frtestboundary"


def part(name: str | None, value: bytes) -> bytes:
    disposition = "form-data" if name is None else f'form-data; name="{name}"'
    return (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").encode() + value \
        + b"\r\n"


def multipart_body(base: dict[str, str], extra: bytes) -> tuple[bytes, str]:
    """A valid post (`base`: a fresh token and good answers) plus `extra` raw parts."""
    body = encode_multipart(base, BOUNDARY)
    body = body.removesuffix(f"--{BOUNDARY}--\r\n".encode()) + extra \
        + f"--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def urlencoded_body(base: dict[str, str], extra: str) -> tuple[bytes, str]:
    body = urlencode(base) + "&" + extra
    return body.encode("ascii"), "application/x-www-form-urlencoded"


# (case, body maker(good fields, canary) -> (body, content type), status, Dutch message, English)
TOO_MANY = ("te veel velden", "too many fields")
UNREADABLE = ("onleesbare tekenset", "unreadable encoding")
NO_NAME = ("zonder veldnaam", "without a field name")
Maker = Callable[[dict[str, str], str], tuple[bytes, str]]
CASES: list[tuple[str, Maker, int, tuple[str, str]]] = [
    ("multipart part without a name",
     lambda b, m: multipart_body(b, part(None, m.encode())), 400, NO_NAME),
    ("multipart part with an empty name",
     lambda b, m: multipart_body(b, part("", m.encode())), 400, NO_NAME),
    ("urlencoded pair without a name",
     lambda b, m: urlencoded_body(b, f"={m}"), 400, NO_NAME),
    ("urlencoded %FF in a value",
     lambda b, m: urlencoded_body(b, f"phone={m}%FF%FE"), 400, UNREADABLE),
    ("urlencoded latin-1 byte in a value",
     lambda b, m: (urlencoded_body(b, "")[0] + b"&phone=caf\xe9" + m.encode(),
                   "application/x-www-form-urlencoded"), 400, UNREADABLE),
    ("urlencoded %FF in a name",
     lambda b, m: urlencoded_body(b, f"na%FFme={m}"), 400, UNREADABLE),
    ("checkbox value 120,000 times (urlencoded)",
     lambda b, m: urlencoded_body(b, "&".join(["symptoms=koorts"] * 120_000)), 400,
     TOO_MANY),
    ("checkbox value 120,000 times (multipart)",
     lambda b, m: multipart_body(b, part("symptoms", b"koorts") * 120_000), 400, TOO_MANY),
    ("5,000 multipart fields",
     lambda b, m: multipart_body(b, b"".join(part(f"f{i}", b"x") for i in range(5000))),
     400, TOO_MANY),
    ("5,000 urlencoded fields",
     lambda b, m: urlencoded_body(b, "&".join(f"f{i}=x" for i in range(5000))), 400,
     TOO_MANY),
    ("an answer over a megabyte",
     lambda b, m: multipart_body(b, part("phone", m.encode() * 100_000)), 413,
     ("veel te lang", "far too long")),
    ("a checkbox value sent twice",
     lambda b, m: multipart_body(b, part("symptoms", b"koorts") * 2), 400,
     ("twee keer", "sent twice")),
    ("a radio answer sent twice",
     lambda b, m: multipart_body(b, part("contact", b"mail") * 2), 400,
     ("twee keer", "sent twice")),
    ("a select answer sent twice",
     lambda b, m: multipart_body(b, part("insurer", b"VGZ") * 2), 400,
     ("twee keer", "sent twice")),
    ("a text answer sent twice",
     lambda b, m: multipart_body(b, part("phone", b"020 123 4567") * 2), 400,
     ("twee keer", "sent twice")),
    ("multipart value not UTF-8",
     lambda b, m: multipart_body(b, part("email", b"caf\xe9" + m.encode())), 400,
     ("niet gelezen", "could not be read")),
]


def nothing_kept(app: Flask) -> None:
    nothing_kept_in(app.extensions["formrelay"].store)


def nothing_kept_in(store: Store) -> None:
    for table in ("submissions", "outbox"):
        assert store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table  # noqa: S608


@pytest.mark.parametrize(("make", "status", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_body_gets_a_clear_answer_and_nothing_is_kept(
        app: Flask, client: FlaskClient, logs: pytest.LogCaptureFixture,
        make: Maker, status: int,
        message: tuple[str, str]) -> None:
    dutch, english = message
    mark = canary()
    for lang, accept, expected in (("nl", "text/html", dutch),
                                   ("en", "application/json", english),
                                   ("en", "text/html", english)):
        base = {**form_token(client), **valid_answers(mark), "_lang": lang}
        body, ctype = make(base, mark)
        # ?lang= as the form's action has it (errors before the body is read use it)
        r = client.post(f"/f/intake?lang={lang}", data=body, content_type=ctype,
                        headers={"Origin": ORIGIN, "Accept": accept})
        assert r.status_code == status, (lang, accept, r.get_data(as_text=True)[:2000])
        if accept == "application/json":
            got = r.get_json()
            assert got["ok"] is False
            text = " ".join([got["error"], *(m for ms in got["errors"].values() for m in ms)])
        else:
            assert r.mimetype == "text/html"
            text = re.sub(r"\s+", " ", r.get_data(as_text=True))
            assert "Maak bijlagen kleiner" not in text and "attached files smaller" not in text
        assert expected in text, text[:3000]
    nothing_kept(app)
    logged = "\n".join(r.getMessage() for r in logs.records)
    assert mark not in logged
    assert not [r for r in logs.records if r.levelno >= logging.ERROR], logged


def test_each_checkbox_choice_once_is_still_fine(app: Flask, client: FlaskClient) -> None:
    r = post_form(client, {**valid_answers(), "symptoms": ["hoofdpijn", "koorts", "overig"]},
                  json_answer=True)
    assert r.status_code == 200, r.get_json()


# -- a select starts on "Kies…" ----------------------------------------------------------
SELECTS: list[dict[str, Any]] = [
    {"name": "name", "type": "text", "label": "Naam", "required": True},
    {"name": "insurer", "type": "select", "label": "Verzekeraar", "required": True,
     "choices": ["Zilveren Kruis", "VGZ"], "choices_en": ["Silver Cross", "VGZ"]},
    {"name": "floor", "type": "select", "label": "Verdieping", "choices": ["begane grond",
                                                                          "eerste"]},
]


def options(html: str, name: str) -> list[tuple[bool, str, str]]:
    select = re.search(rf'<select[^>]*name="{name}"[^>]*>(.*?)</select>', html, re.S)
    assert select, html
    return [("selected" in attrs, value, shown) for attrs, value, shown in
            re.findall(r'<option([^>]*?)value="([^"]*)"[^>]*>(.*?)</option>',
                       select.group(1))]


@pytest.mark.parametrize(("lang", "choose"), [("nl", "Kies…"), ("en", "Choose…")])
def test_select_starts_on_an_empty_choose_option(make_app: Callable[..., Flask], lang: str,
                                                 choose: str) -> None:
    html = make_app(fields=SELECTS).test_client().get(f"/f/intake?lang={lang}") \
        .get_data(as_text=True)
    for name in ("insurer", "floor"):
        opts = options(html, name)
        assert opts[0] == (True, "", choose), opts
        assert not any(selected for selected, _, _ in opts[1:]), opts
    assert re.search(r'<select[^>]*aria-required="true"[^>]*name="insurer"', html) or \
        re.search(r'<select[^>]*name="insurer"[^>]*aria-required="true"', html)


def test_required_select_left_on_choose_is_refused(make_app: Callable[..., Flask]) -> None:
    app = make_app(fields=SELECTS)
    client = app.test_client()
    for sent in ({"name": "Jan"}, {"name": "Jan", "insurer": ""}):
        r = post_form(client, sent)
        assert r.status_code == 400
        html = r.get_data(as_text=True)
        error = re.search(r'<p class="error" id="e-insurer">(.*?)</p>', html, re.S)
        assert error and "Dit veld is vereist" in error.group(1), html
        assert options(html, "insurer")[0][:2] == (True, "")
        r = post_form(client, sent, json_answer=True)
        assert r.status_code == 400 and "insurer" in r.get_json()["errors"]
    nothing_kept(app)


def test_optional_select_left_empty_stores_no_answer(make_app: Callable[..., Flask],
                                                     keys: Any) -> None:
    from .helpers.submit import answers_json, inner
    from .keys import gpg_decrypt

    app = make_app(fields=SELECTS)
    r = post_form(app.test_client(), {"name": "Jan", "insurer": "VGZ", "floor": ""},
                  json_answer=True)
    assert r.status_code == 200, r.get_json()
    ct = app.extensions["formrelay"].store.submissions.ciphertext(r.get_json()["reference"])
    data = answers_json(inner(gpg_decrypt(keys["alice"], ct)))
    assert data["answers"]["insurer"] == "VGZ" and data["answers"]["floor"] == ""


def test_consent_tick_is_announced_as_required(client: FlaskClient) -> None:
    html = client.get("/f/intake").get_data(as_text=True)
    tick = re.search(r'<input[^>]*id="f-consent"[^>]*>', html)
    assert tick, html
    assert 'aria-required="true"' in tick.group(0) and " required" in tick.group(0)


def test_bad_bodies_through_real_gunicorn(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """The same bodies through deploy/gunicorn.conf.py: the same answers, no 500, nothing
    stored, and the canary in none of gunicorn's log lines."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path / "config.toml",
                          make_config_dict(tmp_path / "data", keys, server={
                              "base_url": base, "rate_limit_ip": "100/minute"}))
    mark = canary()
    with gunicorn(tmp_path, config, port) as log:
        for case, make, status, (dutch, _) in CASES:
            _, page, _ = _http(f"{base}/f/intake")
            body, ctype = make({**_hidden(page), **valid_answers(mark)}, mark)
            got, answer, _ = _http(f"{base}/f/intake", body, {
                "Accept": "application/json", "Origin": base, "Content-Type": ctype})
            assert got == status, (case, answer[:500])
            error = json.loads(answer)
            assert error["ok"] is False, case
            assert dutch in " ".join([error["error"], *sum(error["errors"].values(), [])]), case
    nothing_kept_in(open_store(tmp_path / "data" / "formrelay.db"))
    text = log.read_text(encoding="utf-8")
    assert mark not in text
    assert '"status": 500' not in text and "Traceback" not in text


def test_bad_body_where_the_answer_is_a_404_or_429_is_no_500(
        make_app: Callable[..., Flask]) -> None:
    """Error pages look for the posted language; a body that cannot be read must not turn
    them into a 500."""
    app = make_app(server={"rate_limit_ip": "2/minute"})  # the 404 counts too
    client = app.test_client()
    body, ctype = multipart_body(form_token(client), part(None, b"x"))
    for path, status in (("/f/nope", 404), ("/f/intake", 400), ("/f/intake", 429)):
        r = client.post(path, data=body, content_type=ctype, headers={"Origin": ORIGIN})
        assert r.status_code == status, r.get_data(as_text=True)
    nothing_kept(app)
