"""Cross-cutting checks of the compliance list (../shared/compliance.md) that belong to
no single feature: error pages and logs show no form data and debug stays off
(line 25, ASVS 16.2.5). The other lines are tested in their feature's test file; the
canary flow (test_canary.py) covers lines 2, 5 and 22-23 across all of them."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask

from formrelay.intake.pipeline import Posted, Stored
from formrelay.logs import JsonFormatter

from .canary import leaks
from .conftest import canary, post_form, valid_answers


def test_unhandled_error_in_a_view_shows_and_logs_no_form_data(
        make_app: Callable[..., Flask], logs: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")  # an operator's stray setting changes nothing

    class Bug:
        def prepare(self, posted: Posted) -> None:
            # a bug whose message quotes what the patient typed
            raise ValueError(f"cannot handle {posted.fields.get('name')!r}: "
                             f"{posted.sub.answers!r}")

        def record(self, stored: Stored, prepared: None) -> None:
            return None

    app = make_app(extra_steps=[Bug()])
    assert app.debug is False
    relay = app.extensions["formrelay"]
    mark = canary()
    bodies = []
    for json_answer in (False, True):
        r = post_form(app.test_client(), valid_answers(mark), json_answer=json_answer)
        assert r.status_code == 500
        bodies.append(r.get_data(as_text=True))
    html, answer = bodies
    assert "Er ging bij ons iets mis" in html and "020 555 0101" in html  # calm, in Dutch
    assert json.loads(answer)["ok"] is False
    for body in bodies:
        assert "Traceback" not in body and "ValueError" not in body and "bug" not in body
    assert relay.store.submissions.rows() == []
    # the operator learns what and where, never the message
    errors = [r for r in logs.records if r.getMessage().startswith("unhandled error")]
    assert len(errors) == 2
    assert all("ValueError at test_compliance.py" in r.getMessage() for r in errors)
    json_lines = [JsonFormatter().format(r) for r in logs.records]
    assert leaks(mark, texts=[*bodies, logs.text, *json_lines]) == []
    assert leaks("Jeroen", texts=[logs.text, *json_lines]) == []
