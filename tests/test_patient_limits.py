"""The patient's other posts are rate limited per address like the form's posts
(server.rate_limit_ip): reading an answer with a reply code and replying to it (one
counter), and asking for an upload link (another). Over the limit: a clear 429 page with
Retry-After, and the post is not looked at (no wrong-code count, no link mail)."""

from __future__ import annotations

from typing import Any

from .area import Clock
from .helpers.replies import FIELDS, read, send_form
from .helpers.uploads import submit


def test_reading_answers_is_limited_per_address(make_app: Any) -> None:
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock,
                   server={"rate_limit_ip": "3/minute"})
    client = app.test_client()
    reference, code = send_form(client)  # the form's own counter
    for _ in range(3):
        assert read(client, reference, "AAAA-AAAA-AAAA").status_code == 403
    over = read(client, reference, code)
    html = over.get_data(as_text=True)
    assert over.status_code == 429 and "Too many attempts" in html, html
    assert 0 < int(over.headers["Retry-After"]) <= 61
    # replying to the answer shares the counter; nothing of either post was looked at
    reply = client.post("/r/reply?lang=en", data={"reference": reference, "code": code,
                                                   "reply": "Dank u"})
    assert reply.status_code == 429
    row = app.extensions["formrelay"].store.replies.get(reference)
    assert row["failures"] == 3 and row["state"] == "waiting"
    # another address is not affected
    other = client.post("/r/?lang=en", data={"reference": reference, "code": code},
                        environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200 and "not answered yet" in other.get_data(as_text=True)
    clock.advance(seconds=61)
    back = read(client, reference, code)
    assert back.status_code == 200 and "not answered yet" in back.get_data(as_text=True)


def test_asking_for_upload_links_is_limited_per_address(make_app: Any) -> None:
    clock = Clock()
    app = make_app(upload_link=True, clock=clock, server={"rate_limit_ip": "3/minute"})
    client = app.test_client()
    _, offer = submit(client, "x")
    for _ in range(3):  # a typo in the address, corrected twice
        r = client.post("/u/ask?lang=en", data={"offer": offer, "email": "zoe@", "_lang": "en"})
        assert r.status_code == 400, r.get_data(as_text=True)
    over = client.post("/u/ask?lang=en", data={"offer": offer, "email": "zoe@example.nl",
                                               "_lang": "en"})
    assert over.status_code == 429 and "Too many attempts" in over.get_data(as_text=True)
    assert "Retry-After" in over.headers
    store = app.extensions["formrelay"].store
    assert [m for m in store.outbox.rows() if m["kind"] == "upload_link"] == []
    clock.advance(seconds=61)
    ok = client.post("/u/ask?lang=en", data={"offer": offer, "email": "zoe@example.nl",
                                             "_lang": "en"})
    assert ok.status_code == 200 and "Check your e-mail" in ok.get_data(as_text=True)
    assert len([m for m in store.outbox.rows() if m["kind"] == "upload_link"]) == 1
