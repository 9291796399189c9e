"""A form's WTForms class is built once per configuration and language, and keeps
nothing of one post for the next; a worker compiles the patient's pages before its
first request."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from formrelay.config import load_config
from formrelay.intake import forms
from formrelay.ops.server import warm_worker
from formrelay.settings import FormSpec

from .conftest import ENV, make_config_dict, post_form, valid_answers, write_config
from .keys import TestKey

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def _spec(tmp_path: Path, keys: dict[str, TestKey], **kw: Any) -> FormSpec:
    cfg = make_config_dict(tmp_path / "data", keys, **kw)
    spec = load_config(write_config(tmp_path / "config.toml", cfg), ENV).form("intake")
    assert spec is not None
    return spec


def _fields(answers: dict[str, str]) -> forms.Fields:
    return {k: [v] for k, v in answers.items()}


def test_class_built_once_per_configuration(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    spec = _spec(tmp_path, keys)
    assert forms.form_class(spec, "nl") is forms.form_class(spec, "nl")
    assert forms.form_class(spec, "en") is not forms.form_class(spec, "nl")
    # a reloaded configuration (new objects) gets its own class, with its own labels
    fields = [{"name": "name", "type": "text", "label": "Volledige naam", "required": True}]
    reloaded = _spec(tmp_path, keys, fields=fields)
    form = forms.empty_form(reloaded, "nl")
    assert form["name"].label.text == "Volledige naam" and "complaint" not in form


def test_uploads_of_one_post_never_reach_the_next(tmp_path: Path,
                                                  keys: dict[str, TestKey]) -> None:
    spec = _spec(tmp_path, keys)
    pdf = forms.File("verwijzing.pdf", "application/pdf", io.BytesIO(b"%PDF-1.4 brief"))
    first = forms.validate(spec, "nl", _fields(valid_answers()), {"attachment": [pdf]})
    assert first.ok and [u.filename for u in first.uploads] == ["verwijzing.pdf"]
    second = forms.validate(spec, "nl", _fields(valid_answers()), {})
    assert second.ok and second.uploads == []
    assert next(a for a in second.answers if a.name == "attachment").value == []
    bad = forms.File("nep.pdf", "application/pdf", io.BytesIO(b"geen pdf"))
    third = forms.validate(spec, "nl", _fields(valid_answers()), {"attachment": [bad]})
    assert not third.ok and third.uploads == [] and "attachment" in third.errors


def test_worker_compiles_the_patient_pages_before_its_first_request(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """gunicorn's post_worker_init (ops/server.py) compiles what a patient's request
    renders: then neither the form, the thanks page nor an error page compiles one."""
    warm_worker(SimpleNamespace(wsgi=app))

    def no_compile(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a template was compiled inside a request")

    monkeypatch.setattr(app.jinja_env, "compile", no_compile)
    client = app.test_client()
    assert client.get("/f/intake").status_code == 200
    assert post_form(client, valid_answers()).status_code == 200
    assert client.get("/f/nope").status_code == 404
    warm_worker(SimpleNamespace(wsgi=Flask("other")))  # another app: nothing to do
