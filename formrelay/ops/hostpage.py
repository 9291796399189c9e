"""A stand-in practice website for the demo and the browser tests.

`formrelay demo` shows the form the way a patient meets it: inside the example practice
page (widgets/examples/practice.html), served from a second origin (127.0.0.1 on the
next port) with the snippet pointing at the demo service. A plain threaded HTTP server
from the standard library, loopback only; no Flask.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# formrelay/widgets/examples links to the repository's widgets/examples; a wheel carries
# the pages themselves, so `formrelay demo` finds them in a checkout and when installed.
EXAMPLES = Path(__file__).resolve().parent.parent / "widgets" / "examples"
PLACEHOLDER = "https://forms.example.nl"


def example_page(base_url: str, name: str = "practice.html") -> bytes:
    """An example page with its snippet pointing at `base_url`."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    return text.replace(PLACEHOLDER, base_url.rstrip("/")).encode("utf-8")


def serve_pages(port: int, pages: dict[str, bytes], host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve fixed HTML pages by path in a daemon thread; `shutdown()` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            body = pages.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="hostpage").start()
    return server
