"""Logging for operators: one JSON line per event, never form content, never a link secret.

`configure_logging()` puts a `JsonFormatter` on the root logger (used by `formrelay
serve`, `worker` and `demo`); `GunicornLogger` does the same for gunicorn's own error
and access logs. Every line passes `redact()`, which removes patient-copy link secrets
and query strings from anything that looks like a URL path, so even a careless log
call or a custom access-log format cannot write them. Exceptions are logged as their
type and stack frames only: an exception's message can quote the value that caused it
(`log_exception` logs a caught one that way whatever the handler's formatter).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import IO, Any

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged
# as its own field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_MARK = "_formrelay_json"
# gunicorn's own loggers are set up by gunicorn; werkzeug's dev-server request lines
# (demo) are what an access log says.
OWN_LOGGERS = ("formrelay", "werkzeug")


# /copy/<token>: a patient copy's link token. The secret itself is never in a path (it
# travels in the fragment and the POST body); the token is redacted too, and so is a
# fragment a mail client may have mangled into the path as %23 (or left as #).
_COPY_LINK = re.compile(r"(/copy/)[^/\s?\"'<>]+")
# /u/<id>.<secret>: an upload link holds its secret in the path (the no-JavaScript post
# must reach it), so the whole token is redacted, also under /u/<token>/files/...
_UPLOAD_LINK = re.compile(r"(/u/)(?!ask\b)[A-Za-z0-9_-]+\.[^/\s?\"'<>]+")
# A query string after a path (it may hold codes or tokens): drop it.
_QUERY = re.compile(r"(/[^\s?#\"'<>]*)\?[^\s#\"'<>]*")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` without link secrets or query strings."""
    if "/" not in text:
        return text
    if "?" in text:  # every pattern needs its literal part: most lines skip them all
        text = _QUERY.sub(r"\1", text)
    return redact_copy_link(text)


def redact_copy_link(text: str) -> str:
    """`text` with every patient-copy and upload link token replaced by [redacted]."""
    if "/copy/" in text:
        text = _COPY_LINK.sub(r"\1" + REDACTED, text)
    if "/u/" in text:
        text = _UPLOAD_LINK.sub(r"\1" + REDACTED, text)
    return text


def redact_path(path: str) -> str:
    """A request path as it may be logged: no query, no link secret."""
    return redact(path.split("?", 1)[0])


def exception_fields(exc: BaseException) -> dict[str, Any]:
    """An exception as it may be logged: its type and stack frames, never its message
    (which can quote the value that caused it: a patient's answer or address)."""
    return {"type": type(exc).__name__,
            "frames": [f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"
                       for f in traceback.extract_tb(exc.__traceback__)]}


def log_exception(logger: logging.Logger, msg: str, *args: Any,
                  exc: BaseException) -> None:
    """`logger.error` for a caught exception without `exc_info`: the type and where it
    was raised, never the message, whatever formatter the operator's handlers use
    (`exc` as an extra field, as JsonFormatter writes it)."""
    info = exception_fields(exc)
    where = info["frames"][-1] if info["frames"] else "?"
    logger.error(f"{msg}: %s at %s", *args, info["type"], where, extra={"exc": info},
                 stacklevel=2)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "msg", ...extra fields, "exc"}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_") or key in out:
                continue
            out[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[1] is not None:
            out["exc"] = exception_fields(record.exc_info[1])
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str | int = "INFO", stream: IO[str] | None = None) -> None:
    """JSON lines on stderr for the whole process (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _MARK, False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    wanted = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    # Our own events at the configured level; libraries only from WARNING up: their
    # INFO lines can describe content (fontTools lists the glyphs of a patient's PDF).
    root.setLevel(max(wanted, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(wanted)


# -- gunicorn -------------------------------------------------------------------------
# The only request facts an access line may hold; anything else (headers, the raw
# request line, environ) is left out, so a custom access_log_format cannot add it.
_SAFE_ATOMS = ("h", "m", "U", "s", "B", "b", "M", "D", "L", "T", "p", "H", "t", "r", "q")


@functools.cache
def _gunicorn_logger() -> type:
    from gunicorn import glogging  # only a gunicorn process needs it

    class GunicornLogger(glogging.Logger):
        """gunicorn's logger, writing JSON lines with redacted request paths."""

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for log in (self.error_log, self.access_log):
                for h in log.handlers:
                    h.setFormatter(JsonFormatter())
            # the app's own loggers (formrelay.*) reach the root logger: same format, stderr
            configure_logging(cfg.loglevel)

        def now(self) -> str:
            return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def atoms(self, resp: Any, req: Any, environ: dict[str, Any],
                  request_time: Any) -> dict[str, Any]:
            status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
            path = redact_path(environ.get("PATH_INFO") or "")
            sent = getattr(resp, "sent", None) or 0
            method = environ.get("REQUEST_METHOD", "-")
            proto = environ.get("SERVER_PROTOCOL", "-")
            return {
                "h": environ.get("REMOTE_ADDR", "-"), "m": method, "U": path,
                "r": f"{method} {path} {proto}", "q": "", "H": proto, "s": str(status),
                "B": sent, "b": str(sent), "t": self.now(), "p": f"<{os.getpid()}>",
                "T": request_time.seconds,
                "D": request_time.seconds * 1_000_000 + request_time.microseconds,
                "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
                "L": f"{request_time.seconds}.{request_time.microseconds:06d}",
            }

        def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
            if not self.access_log_enabled:
                return
            atoms = self.atoms(resp, req, environ, request_time)
            safe = self.atoms_wrapper_class({k: atoms[k] for k in _SAFE_ATOMS})
            try:
                msg = self.cfg.access_log_format % safe
            except (KeyError, TypeError, ValueError):
                msg = f"{atoms['m']} {atoms['U']} {atoms['s']}"
            self.access_log.info("%s", msg, extra={
                "event": "http", "method": atoms["m"], "path": atoms["U"],
                "status": int(atoms["s"]) if str(atoms["s"]).isdigit() else atoms["s"],
                "bytes": atoms["B"], "ms": atoms["M"], "remote": atoms["h"]})

    return GunicornLogger


def __getattr__(name: str) -> Any:
    # gunicorn loads "formrelay.logs.GunicornLogger" by name (ops/server.py): the class is
    # made then, so importing this module (delivery does) does not import gunicorn.
    if name == "GunicornLogger":
        return _gunicorn_logger()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
