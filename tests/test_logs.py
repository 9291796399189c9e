"""Operator logs: one JSON line per event, no link secret, no query string, no
exception message (it can quote a patient's value), no library chatter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from formrelay.logs import (
    JsonFormatter,
    configure_logging,
    log_exception,
    redact,
    redact_path,
)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {n: logging.getLogger(n).level for n in ("formrelay", "werkzeug", "fontTools")})
    stream = io.StringIO()
    configure_logging("INFO", stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(ln) for ln in stream.getvalue().splitlines()]


def test_one_json_line_per_event_with_fields(json_log: io.StringIO) -> None:
    log = logging.getLogger("formrelay.test")
    log.info("form %s: received %s", "intake", "FR-AAAA-BBBB",
             extra={"event": "received", "reference": "FR-AAAA-BBBB"})
    log.warning("line one\nline two")
    [first, second] = entries(json_log)
    assert first["msg"] == "form intake: received FR-AAAA-BBBB"
    assert first["event"] == "received" and first["reference"] == "FR-AAAA-BBBB"
    assert first["level"] == "info" and first["logger"] == "formrelay.test"
    assert str(first["time"]).endswith("Z")
    assert second["msg"] == "line one\nline two"  # still one line in the file
    assert len(json_log.getvalue().splitlines()) == 2


def test_link_secrets_and_queries_are_redacted(json_log: io.StringIO) -> None:
    log = logging.getLogger("werkzeug")
    log.info('127.0.0.1 - - "GET /copy/AbC123.sIgN?code=482913&lang=nl HTTP/1.1" 200 -')
    logging.getLogger("formrelay.x").info("opened", extra={"path": "/copy/AbC123.sIgN"})
    text = json_log.getvalue()
    for secret in ("AbC123", "sIgN", "482913", "lang=nl"):
        assert secret not in text
    assert "/copy/[redacted]" in text
    assert redact_path("/f/intake?embed=1") == "/f/intake"
    assert redact("nothing to see") == "nothing to see"


def test_exceptions_are_logged_without_their_message(json_log: io.StringIO) -> None:
    try:
        raise ValueError("Anna de Vries, 12-03-1980")
    except ValueError:
        logging.getLogger("formrelay.web").exception("unhandled error")
    [entry] = entries(json_log)
    assert "Anna" not in json_log.getvalue()
    exc = entry["exc"]
    assert isinstance(exc, dict) and exc["type"] == "ValueError"
    assert any("test_logs.py" in frame for frame in exc["frames"])


def test_caught_exceptions_are_logged_without_their_message_by_any_formatter(
        json_log: io.StringIO) -> None:
    plain = io.StringIO()
    handler = logging.StreamHandler(plain)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))  # not ours
    log = logging.getLogger("formrelay.web")
    log.addHandler(handler)
    try:
        try:
            int("Anna de Vries, 12-03-1980")
        except ValueError as exc:
            log_exception(log, "unhandled error in %s", "POST /f/intake", exc=exc)
    finally:
        log.removeHandler(handler)
    assert "Anna" not in plain.getvalue() and "Anna" not in json_log.getvalue()
    assert plain.getvalue().startswith("ERROR unhandled error in POST /f/intake: ValueError at "
                                       "test_logs.py:")
    [entry] = entries(json_log)
    assert entry["exc"]["type"] == "ValueError"  # type: ignore[index]


def test_library_info_lines_stay_out(json_log: io.StringIO) -> None:
    logging.getLogger("fontTools.subset").info("Glyph names: ['A', 'n', 'a']")
    logging.getLogger("fontTools.subset").warning("a real problem")
    assert [e["msg"] for e in entries(json_log)] == ["a real problem"]


def test_formatter_is_safe_for_odd_extras() -> None:
    record = logging.LogRecord("formrelay", logging.INFO, __file__, 1, "x %s", ("y",), None)
    record.size = 12
    record.path = "/copy/secret.sig?x=1"
    out = json.loads(JsonFormatter().format(record))
    assert out["size"] == 12 and out["path"] == "/copy/[redacted]" and out["msg"] == "x y"
