"""GET /healthz: liveness and readiness, as JSON.

The same essentials as `formrelay check` (see checks.essentials): data folder,
database, each key's state and expiry, the packet gpg writes, the outbox's oldest
mail, the clock and the audit chain (verified from the last verified row on), and with
Redis for the rate limits whether it answers; no other network calls. 200 when nothing
is an error (warnings are listed), 503 otherwise, so a container HEALTHCHECK or an
uptime monitor sees it.

Anyone may call it, so by default it says only each essential's level
(checks.public_health): no paths, fingerprints, addresses, expiry dates or error texts.
The details are the operator's: `formrelay check`, or this route with
`Authorization: Bearer $FORMRELAY_HEALTH_TOKEN` when that token is set.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, jsonify, request

from ..ops.checks import ERROR, essentials, public_health
from .common import relay
from .protect import protection

bp = Blueprint("health", __name__)
log = logging.getLogger("formrelay.web")


def _operator(token: str) -> bool:
    """The request carries the operator's health token (compared in constant time)."""
    given = request.headers.get("Authorization", "")
    if not token or not given:
        return False
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                             token.encode()):
        log.info("healthz: wrong token; answered with the public status")
        return False
    return True


@bp.get("/healthz")
def healthz() -> Any:
    r = relay()
    level, checks = essentials(r, r.clock(), protection().storage)
    status = 200 if level != ERROR else 503
    if _operator(r.settings.health_token):
        return jsonify({"ok": level != ERROR, "status": level, "checks": checks}), status
    return jsonify(public_health(level, checks)), status
