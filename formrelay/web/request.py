"""A request class that keeps uploads in memory and reads form bodies strictly.

Werkzeug spools uploads over 500 KB to a temporary file; that file would hold the
patient's document in plaintext. Here every upload stays in the request's memory (the
body size is capped by MAX_CONTENT_LENGTH) and is streamed into gpg from there.

Werkzeug is lenient with bodies no browser sends: it keeps a multipart part without a
name (under the key None), keeps `%FF` in an urlencoded value as the text "%FF" and
answers every size limit with the same bare 413. `StrictFormParser` turns each of these
into a `BadForm` that names what is wrong, so the one error handler can say it.
"""

from __future__ import annotations

import io
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from flask import Request
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser, MultiPartParser

if TYPE_CHECKING:
    from werkzeug.formparser import t_parse_result

_AGAIN = " Please reload the page and send it again."


class BadForm(HTTPException):
    """A form body that cannot be taken as it is; `message` is the English msgid.

    Outside the errors.py tree on purpose: it is raised inside werkzeug's form parsing,
    next to werkzeug's own 413 and 408 for the same body, and is answered with them by
    the HTTPException handler, which must not read the body again for the language."""

    def __init__(self, code: int, kind: str, message: str, **params: Any):
        super().__init__(description=kind)
        self.code = code
        self.kind = kind  # for the log: what was wrong, never what was sent
        self.message = message
        self.params = params


def no_name() -> BadForm:
    return BadForm(400, "part without a name", "The form could not be read: it contained an "
                   "answer without a field name." + _AGAIN)


def unreadable() -> BadForm:
    return BadForm(400, "not UTF-8", "The form was sent in an unreadable encoding (not "
                   "UTF-8)." + _AGAIN)


def unreadable_body(why: str) -> BadForm:
    """A body the server could not read (slowbody.py): its framing is broken."""
    return BadForm(400, f"body not readable ({why})", "The request could not be read. "
                   "Please reload the page and try again.")


def cut_off() -> BadForm:
    return BadForm(400, "multipart body incomplete", "The form arrived incomplete, so "
                   "nothing was stored." + _AGAIN)


def too_many(limit: int) -> BadForm:
    return BadForm(400, "too many fields", "The form contained too many fields (at most "
                   "%(max)s)." + _AGAIN, max=limit)


def answer_too_long(limit: int) -> BadForm:
    return BadForm(413, "answer over the form memory limit", "One of the answers is far too "
                   "long (over %(kb)s KB). Please shorten it and send the form again.",
                   kb=limit // 1024)


def _check_names(*dicts: MultiDict[str, Any]) -> None:
    if any(not key for d in dicts for key in d):
        raise no_name()


class _CountingMultiPartParser(MultiPartParser):
    """Counts finished parts, so a 413 raised at part max+1 is known as "too many"."""

    parts = 0

    def get_part_charset(self, headers: Headers) -> str:  # once per finished text part
        self.parts += 1
        return super().get_part_charset(headers)

    def start_file_streaming(self, event: Any, total_content_length: int | None) -> IO[bytes]:
        self.parts += 1  # once per file part
        return super().start_file_streaming(event, total_content_length)


class StrictFormParser(FormDataParser):
    def _parse_multipart(self, stream: IO[bytes], mimetype: str, content_length: int | None,
                         options: dict[str, str]) -> t_parse_result:
        parser = _CountingMultiPartParser(
            stream_factory=self.stream_factory, max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts, cls=self.cls)
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        try:
            form, files = parser.parse(stream, boundary, content_length)
        except ValueError:
            # werkzeug's answer to a body that ends before its closing boundary (or has
            # a part without headers); its parser would take it for an empty form
            raise cut_off() from None
        except RequestEntityTooLarge:
            # werkzeug raises the same bare 413 for: more than max_form_parts parts (when
            # part max+1 starts, all max before it are counted), a text part over
            # max_form_memory_size, and a chunked body over MAX_CONTENT_LENGTH (no length).
            problem = None
            if self.max_form_parts is not None and parser.parts >= self.max_form_parts:
                problem = too_many(self.max_form_parts)
            elif content_length is not None and self.max_form_memory_size is not None:
                problem = answer_too_long(self.max_form_memory_size)
            if problem is None:
                raise
            # Read the rest (at most MAX_CONTENT_LENGTH, the stream is limited): a server
            # that closes with body unread resets the connection, and the client, still
            # sending, never sees the answer.
            while stream.read(1 << 16):
                pass
            raise problem from None
        _check_names(form, files)
        # Text parts that are not valid UTF-8 arrive with U+FFFD in them; intake/forms.py refuses
        # those next to their field, keeping the patient's other answers on the page.
        return stream, form, files

    def _parse_urlencoded(self, stream: IO[bytes], mimetype: str, content_length: int | None,
                          options: dict[str, str]) -> t_parse_result:
        body = stream.read()
        # Counted before parsing: 120,000 repeats of one checkbox cost time and memory.
        if self.max_form_parts is not None and body.count(b"&") >= self.max_form_parts:
            raise too_many(self.max_form_parts)
        try:
            items = parse_qsl(body.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                              errors="strict")
        except UnicodeDecodeError:  # raw bytes or %-escapes that are not UTF-8
            raise unreadable() from None
        form = self.cls(items)
        _check_names(form)
        return stream, form, self.cls()


class InMemoryRequest(Request):
    form_data_parser_class = StrictFormParser
    _bad_form: BadForm | None = None

    def _load_form_data(self) -> None:
        # The body is read once: a refusal is remembered, so every later look at the form
        # (the view after an error page's language lookup) meets it again, not an empty form.
        if self._bad_form is not None:
            raise self._bad_form
        try:
            super()._load_form_data()
        except BadForm as exc:
            self._bad_form = exc
            raise

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None,
                         content_length: int | None = None) -> IO[bytes]:
        return io.BytesIO()
