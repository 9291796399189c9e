"""Where a server's CPU goes: py-spy (PyPI `py-spy`) sampling its workers under load.

`record(pids, seconds, folder)` starts one `py-spy record --format raw` per worker (non-
blocking: the workers are not paused to be sampled) and returns the processes; `wait`
collects their folded stacks. `breakdown` puts each sampled stack in the first category
of CATEGORIES whose marker appears in it (most specific first), so a stack in the rate
limiter's database write counts as "rate limits", not "database"; flask-limiter's own
bookkeeping (its decorator is on every post's stack) counts with Flask.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (category, markers in a folded stack): the first category with a marker wins
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("encryption in process (Sequoia)", ("inprocess.py",)),
    ("gpg: start, pipes, wait", ("gnupg.py", "spawn.py", "subprocess.py", "gevent/os.py")),
    ("payload: MIME, JSON, subject", ("intake/payload.py", "mail/mime.py", "email/")),
    # limits' storage and strategy, not flask-limiter's decorator (it wraps every view)
    ("rate limits", ("/limits/", "ratelimit.py", "hit_counter", "hit_limits")),
    ("form token (check, use)", ("tokens.py", "use_form_token", "itsdangerous")),
    ("audit row", ("store/audit.py",)),
    ("database: submission, outbox, commit", ("store/", "sqlite", "psycopg")),
    ("validation (WTForms)", ("intake/forms.py", "wtforms", "email_validator")),
    ("templates (Jinja)", ("jinja2",)),
    ("logging", ("logging/", "formrelay/logs.py")),
    ("request body (werkzeug multipart)", ("formparser.py", "sansio/multipart.py")),
    ("Flask, werkzeug, flask-limiter: routing, response", ("flask/", "werkzeug/",
                                                           "flask_limiter/")),
    ("gunicorn, gevent: HTTP, event loop", ("gunicorn/", "gevent/", "greenlet")),
]


def py_spy() -> str:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else (shutil.which("py-spy") or "py-spy")


Started = list[tuple[subprocess.Popen[bytes], Path]]


def record(pids: list[int], seconds: float, folder: Path) -> Started:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for pid in pids:
        path = folder / f"worker-{pid}.txt"
        proc = subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--duration",
                                 str(max(1, int(seconds))), "--rate", "250", "--nonblocking",
                                 "--format", "raw", "--output", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((proc, path))
    return out


def wait(started: Started, timeout: float) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for proc, path in started:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    stacks[stack] += int(count)
    return stacks


def breakdown(stacks: Counter[str]) -> list[tuple[str, float]]:
    """(category, share of the samples), in CATEGORIES order, then "other"."""
    total = sum(stacks.values()) or 1
    shares: Counter[str] = Counter()
    for stack, count in stacks.items():
        name = next((c for c, marks in CATEGORIES if any(m in stack for m in marks)), "other")
        shares[name] += count
    return [(name, shares[name] / total) for name, _ in [*CATEGORIES, ("other", ())]
            if shares[name]]
