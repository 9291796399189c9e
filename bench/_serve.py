"""Run an app under gunicorn for the benchmarks, exactly as `formrelay serve` does.

    python bench/_serve.py formrelay CONFIG --bind 127.0.0.1:PORT --workers 2 --connections 100
    python bench/_serve.py plain CONFIG ...

`formrelay` is `formrelay.create_app(config)`. `plain` is the baseline: a bare Flask
endpoint that parses the same posts and commits the answers *unencrypted* to SQLite
with the same durability settings (WAL, synchronous=FULL, one transaction per post).
Both go through `formrelay.ops.server.run_gunicorn`, so the gunicorn options (gevent
workers, timeouts, access log) are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request

import formrelay
from formrelay.config import load_config
from formrelay.intake.submission import new_reference
from formrelay.ops.server import run_gunicorn


def plain_app(db_path: Path, max_request_mb: int) -> Flask:
    app = Flask("plain")
    app.config["MAX_CONTENT_LENGTH"] = max_request_mb * 1024 * 1024
    local = threading.local()

    def conn() -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(local, "conn", None)
        if c is None:
            c = sqlite3.connect(db_path, timeout=30, isolation_level=None,
                                check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA busy_timeout=30000")
            c.execute("PRAGMA synchronous=FULL")
            c.execute("CREATE TABLE IF NOT EXISTS answers (reference TEXT PRIMARY KEY, "
                      "form_id TEXT NOT NULL, answers TEXT NOT NULL)")
            local.conn = c
        return c

    @app.get("/healthz")
    def healthz() -> Any:
        conn()
        return jsonify({"ok": True})

    @app.get("/f/<form_id>")
    def show(form_id: str) -> Any:
        return f"<form method=post action=/f/{form_id}></form>"

    @app.post("/f/<form_id>")
    def submit(form_id: str) -> Any:
        answers = request.form.to_dict(flat=False)
        reference = new_reference()
        c = conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT INTO answers VALUES (?, ?, ?)",
                      (reference, form_id, json.dumps(answers, ensure_ascii=False)))
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
        return jsonify({"ok": True, "reference": reference})

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["formrelay", "plain"])
    ap.add_argument("config", type=Path)
    ap.add_argument("--bind", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--max-requests", type=int, help="override worker recycling (0 = off)")
    ap.add_argument("--gthread", type=int, metavar="THREADS",
                    help="the former gthread worker with THREADS threads, for comparison")
    args = ap.parse_args()
    if args.kind == "plain":
        raw = tomllib.loads(args.config.read_text(encoding="utf-8"))
        data = args.config.parent / "plain-data"
        data.mkdir(exist_ok=True)
        app = plain_app(data / "plain.db", raw["server"].get("max_request_mb", 25))
        # run_gunicorn builds its app with `formrelay.create_app(settings)` in each worker
        formrelay.create_app = lambda *a, **kw: app  # type: ignore[assignment]
        settings = load_config(args.config, {"FORMRELAY_SECRET_KEY": "x" * 40})
    else:
        settings = load_config(args.config, os.environ)
    extra: dict[str, object] = {} if args.max_requests is None else {
        "max_requests": args.max_requests}
    if args.gthread:
        extra.update(worker_class="gthread", threads=args.gthread)
    run_gunicorn(settings, bind=args.bind, workers=args.workers, connections=args.connections,
                 extra=extra)


if __name__ == "__main__":
    sys.exit(main())
