"""The core runs without the web stack: the relay, the services and the other use cases
import neither Flask, Werkzeug nor gunicorn (the CLI's worker, `check` and the tests use
them outside any request), and neither does the command line until a command serves."""

from __future__ import annotations

import subprocess
import sys

WEB = ("flask", "werkzeug", "gunicorn", "flask_wtf", "flask_limiter")
CORE = ("formrelay", "formrelay.services", "formrelay.intake", "formrelay.intake.relay",
        "formrelay.intake.forms", "formrelay.intake.pipeline", "formrelay.crypto",
        "formrelay.crypto.keyring", "formrelay.crypto.sealing", "formrelay.mail",
        "formrelay.mail.outbox", "formrelay.mail.transport", "formrelay.clinician",
        "formrelay.clinician.accounts", "formrelay.clinician.inbox", "formrelay.patient_copy",
        "formrelay.patient_copy.copies", "formrelay.patient_copy.link_mail", "formrelay.ops",
        "formrelay.ops.checks", "formrelay.ops.retention", "formrelay.ops.worker",
        "formrelay.intake.payload", "formrelay.store", "formrelay.reload", "formrelay.cli")


def test_core_imports_no_web_framework() -> None:
    code = (f"import sys\nimport {', '.join(CORE)}\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({WEB!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_create_app_still_importable_from_the_package() -> None:
    from formrelay import create_app

    assert callable(create_app)
