"""GET /healthz: liveness and readiness, as JSON without secrets."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from .common import relay

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    r = relay()
    checks: dict[str, Any] = {}
    ok = True
    keys = r.key_status()
    checks["keys"] = {rid: {"usable": st.usable, "problem": st.problem, "warning": st.warning,
                            "expires": st.expires.date().isoformat() if st.expires else None}
                      for rid, st in keys.items()}
    ok &= all(st.usable for st in keys.values())
    try:
        r.store.check_writable()
        checks["database"] = {"writable": True}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = {"writable": False, "problem": type(exc).__name__}
        ok = False
    return jsonify({"ok": ok, "checks": checks}), 200 if ok else 503
