"""Posts with a chosen origin and client address, for the abuse-protection tests."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from ..conftest import ORIGIN, encode_multipart


def send(client: FlaskClient, body: dict[str, Any], *, origin: str | None = ORIGIN,
         json_answer: bool = False, query: str = "", ip: str = "127.0.0.1",
         headers: dict[str, str] | None = None) -> Any:
    hdrs = {"Accept": "application/json"} if json_answer else {}
    if origin is not None:
        hdrs["Origin"] = origin
    hdrs.update(headers or {})
    return client.post(f"/f/intake{query}", data=encode_multipart(body), headers=hdrs,
                       content_type="multipart/form-data; boundary=frtestboundary",
                       environ_base={"REMOTE_ADDR": ip})


def hidden(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(_[a-z]+)" value="([^"]*)"', html))


def stored(app: Flask) -> int:
    return len(app.extensions["formrelay"].store.submissions.rows())
