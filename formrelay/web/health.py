"""GET /healthz: liveness and readiness, as JSON without secrets.

The same essentials as `formrelay check` (see checks.essentials): data folder,
database, each key's state and expiry, the packet gpg writes, the outbox's oldest
mail, the clock and the audit chain (verified from the last verified row on); no
paths, no network calls. 200 when nothing is an error (warnings
are listed), 503 otherwise, so a container HEALTHCHECK or an uptime monitor sees it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from ..checks import ERROR, essentials
from .common import relay

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    r = relay()
    level, checks = essentials(r, r.clock())
    return jsonify({"ok": level != ERROR, "status": level, "checks": checks}), \
        200 if level != ERROR else 503
