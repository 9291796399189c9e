"""A request class that keeps uploads in memory.

Werkzeug spools uploads over 500 KB to a temporary file; that file would hold the
patient's document in plaintext. Here every upload stays in the request's memory (the
body size is capped by MAX_CONTENT_LENGTH) and is streamed into gpg from there.
"""

from __future__ import annotations

import io
from typing import IO

from flask import Request


class InMemoryRequest(Request):
    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None,
                         content_length: int | None = None) -> IO[bytes]:
        return io.BytesIO()
