"""The core runs without the web stack: the relay, the services and the other use cases
import neither Flask, Werkzeug nor gunicorn (the CLI's worker, `check` and the tests use
them outside any request)."""

from __future__ import annotations

import subprocess
import sys

WEB = ("flask", "werkzeug", "gunicorn", "flask_wtf", "flask_limiter")
CORE = ("formrelay", "formrelay.relay", "formrelay.services", "formrelay.forms",
        "formrelay.copies", "formrelay.pipeline", "formrelay.delivery", "formrelay.checks",
        "formrelay.inbox", "formrelay.users")


def test_core_imports_no_web_framework() -> None:
    code = (f"import sys\nimport {', '.join(CORE)}\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({WEB!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_create_app_still_importable_from_the_package() -> None:
    from formrelay import create_app

    assert callable(create_app)
