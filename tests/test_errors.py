"""One error tree: every exception formrelay defines is a FormrelayError, either a user
error (a status and a message, rendered as HTML or the one JSON shape) or an operator
error (one line and an exit code on the CLI, the fail-closed 503 on the web)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from flask import Flask

import formrelay
from formrelay.cli import cli
from formrelay.cli.common import Commands
from formrelay.config import ConfigError
from formrelay.crypto.keyring import GpgTimeout
from formrelay.errors import FormrelayError, OperatorError, UserError
from formrelay.store import StoreNotWritable

from .area import cli_run
from .conftest import ENV, post_form, valid_answers

# Control flow, not errors (each says why in its docstring).
INTERNAL = {"formrelay.web.slowbody._TooSlow", "formrelay.web.protect.SendAgain",
            "formrelay.web.request.BadForm", "formrelay.clinician.hashing.Busy"}


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(formrelay.__path__, "formrelay."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_exception_is_a_user_or_an_operator_error() -> None:
    classes = _exception_classes()
    assert {"formrelay.config.ConfigError", "formrelay.patient_copy.copies.CopyRefused",
            "formrelay.web.clinician.api.ApiError"} <= set(classes)
    outside = sorted(name for name, cls in classes.items()
                     if not issubclass(cls, FormrelayError) and name not in INTERNAL)
    assert outside == []
    assert INTERNAL <= set(classes)  # a stale list would hide a new class
    roots = {FormrelayError, UserError, OperatorError}
    both_or_neither = sorted(name for name, cls in classes.items()
                             if cls not in roots and name not in INTERNAL
                             and issubclass(cls, UserError) == issubclass(cls, OperatorError))
    assert both_or_neither == []


@pytest.fixture
def boom_app(make_app: Callable[..., Flask]) -> Flask:
    """The app with one extra page that raises what the test asks for."""
    app = make_app()
    raised: dict[str, Exception] = {}

    def boom() -> str:
        raise raised["exc"]

    app.add_url_rule("/boom", "boom", boom)
    app.config["BOOM"] = raised
    return app


def _raise_on_boom(app: Flask, exc: Exception) -> None:
    app.config["BOOM"]["exc"] = exc


def test_user_error_is_html_or_the_one_json_shape_with_its_status(boom_app: Flask) -> None:
    _raise_on_boom(boom_app, UserError("Please correct the marked fields.", status=422,
                                       errors={"name": ["This field is required."]}))
    client = boom_app.test_client()
    answer = client.get("/boom?lang=en", headers={"Accept": "application/json"})
    assert answer.status_code == 422
    assert answer.get_json() == {"ok": False, "error": "Please correct the marked fields.",
                                 "errors": {"name": ["This field is required."]}}
    page = client.get("/boom?lang=nl")
    assert page.status_code == 422 and page.mimetype == "text/html"
    assert "Verbeter de gemarkeerde velden." in page.get_data(as_text=True)  # translated


def test_form_errors_use_the_same_shape(app: Flask) -> None:
    r = post_form(app.test_client(), {**valid_answers(), "email": "geen-adres"},
                  json_answer=True)
    assert r.status_code == 400
    body = r.get_json()
    assert set(body) == {"ok", "error", "errors"} and body["ok"] is False
    assert list(body["errors"]) == ["email"]


@pytest.mark.parametrize("exc", [
    StoreNotWritable("database /x/formrelay.db cannot be written (disk full); free disk space"),
    GpgTimeout("gpg did not finish encrypting in 30 s and was killed; check gpg"),
    ConfigError("config.toml: forms.intake.patient_copy: no font; install fonts-dejavu"),
])
def test_operator_error_in_a_request_is_the_fail_closed_503(
        boom_app: Flask, logs: pytest.LogCaptureFixture, exc: OperatorError) -> None:
    _raise_on_boom(boom_app, exc)
    client = boom_app.test_client()
    page = client.get("/boom?lang=en")
    assert page.status_code == 503
    text = page.get_data(as_text=True)
    assert "temporarily unavailable" in text and "020 555 0101" in text
    assert str(exc) not in text and type(exc).__name__ not in text
    assert client.get("/boom", headers={"Accept": "application/json"}).get_json()["ok"] is False
    assert any(str(exc) in r.getMessage() for r in logs.records)  # the operator is told


def test_api_errors_are_json_in_english(app: Flask) -> None:
    r = app.test_client().get("/clinician/api/submissions?lang=nl")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.get_json() == {"ok": False, "errors": {}, "error": "A valid API token is "
                            "needed: send `Authorization: Bearer <token>`."}


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_cli_errors_are_one_line_and_an_exit_code(make_app: Callable[..., Flask],
                                                  tmp_path: Path) -> None:
    missing = CliRunner().invoke(cli, ["--config", str(tmp_path / "nowhere.toml"), "keys",
                                       "list"], env=ENV)
    assert missing.exit_code == 1
    assert _one_error_line(missing.output).startswith("Error: ") and \
        "file not found" in missing.output
    unset = CliRunner().invoke(cli, ["purge"], env=ENV)
    assert unset.exit_code == 1
    assert _one_error_line(unset.output) == \
        "Error: no configuration: pass --config FILE or set FORMRELAY_CONFIG"
    make_app()
    bad_name = cli_run(tmp_path, "users", "add", "Anna Smit", "--recipient", "alice",
                       input="x" * 12 + "\n" + "x" * 12 + "\n")
    assert bad_name.exit_code == 1
    assert "not a usable user name" in bad_name.output.splitlines()[-1]
    assert "Traceback" not in bad_name.output


def test_cli_maps_any_operator_error_with_its_exit_code() -> None:
    class Stuck(GpgTimeout):
        exit_code = 3

    @click.group(cls=Commands)
    def group() -> None:
        pass

    @group.group()
    def sub() -> None:
        pass

    @sub.command()
    def run() -> None:
        raise Stuck("gpg did not finish in 30 s and was killed;\ncheck `gpg --version`")

    r = CliRunner().invoke(group, ["sub", "run"])
    assert r.exit_code == 3
    assert _one_error_line(r.output) == \
        "Error: gpg did not finish in 30 s and was killed; check `gpg --version`"
    assert not isinstance(r.exception, FormrelayError)


def test_error_pages_take_their_language_without_reading_the_body(
        make_app: Callable[..., Flask]) -> None:
    """The query string, else the form's own language, else the browser's: never the
    body, which is what an error page may be the answer to."""
    client = make_app(lang="en", server={"max_request_mb": 1}).test_client()
    # a body over the size limit on an English form: its page is in English (it was
    # always Dutch), and ?lang=nl still chooses Dutch
    big = {"name": "x" * (2 * 1024 * 1024)}
    r = client.post("/f/intake", data=big, headers={"Origin": "http://localhost"})
    assert r.status_code == 413
    assert '<html lang="en"' in r.text and "What you sent is too large" in r.text
    r = client.post("/f/intake?lang=nl", data=big, headers={"Origin": "http://localhost"})
    assert r.status_code == 413 and "Wat u verstuurde is te groot" in r.text
    # a page of no form: the browser's language, Dutch when it has no preference
    r = client.get("/f/nope", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert r.status_code == 404 and '<html lang="en"' in r.text
    assert "There is no form with this address" in r.text
    r = client.get("/f/nope")
    assert r.status_code == 404 and '<html lang="nl"' in r.text
    r = client.get("/f/nope?lang=nl", headers={"Accept-Language": "en"})
    assert '<html lang="nl"' in r.text
