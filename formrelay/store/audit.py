"""The audit log's storage: an append-only, hash-chained table of metadata events.

Every event names what happened to which reference, by whom and from where, never any
content. Each row's hash covers its id, its fields and the previous row's hash; the
recorded head shows a cut-off tail, and anchors record where the retention purge cut
the beginning, so `formrelay audit verify` (formrelay.ops.audit) can still check the rest.
Triggers in the schema refuse updates and any delete but the purge's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ..audit_actions import AuditAction
from .base import StoreBase, iso

GENESIS = "0" * 64
AUDIT_FIELDS = ("at", "action", "outcome", "actor", "ip", "reference", "form_id", "detail")


def audit_hash(prev_hash: str, row: dict[str, Any]) -> str:
    # The row's id is chained too (since 0030): a removed or renumbered row breaks it.
    body = json.dumps([prev_hash, int(row.get("id") or 0),
                       *[row.get(k) or "" for k in AUDIT_FIELDS]],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


_AUDIT_COLUMNS = ("id", *AUDIT_FIELDS, "prev_hash", "hash")
_AUDIT_INSERT = (f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "  # noqa: S608 - fixed names
                 f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})")


class AuditLog(StoreBase):
    """Append events, read them back, purge the oldest behind an anchor."""

    def audit(self, action: str, outcome: str = "ok", *, actor: str = "system", ip: str = "",
              reference: str = "", form_id: str = "", detail: str = "") -> None:
        """Append one event to the hash-chained audit log (metadata only, never content).

        `action` must be an `AuditAction` (or its string): an action nobody documented
        cannot enter the log."""
        try:
            action = AuditAction(action).value  # the plain string goes into the hash chain
        except ValueError:
            raise ValueError(f"unknown audit action {action!r}; add it to AuditAction "
                             "(formrelay/audit_actions.py) and to the README's audit log"
                             ) from None
        row = {"at": iso(self.clock()), "action": action, "outcome": outcome, "actor": actor,
               "ip": ip, "reference": reference, "form_id": form_id, "detail": detail}
        with self.transaction() as conn:
            # Continue from the recorded head, not from the last row left: after a cut-off
            # tail the next row still names the missing one, so `audit verify` sees it.
            last_id, prev = conn.execute("SELECT last_id, last_hash FROM audit_head").fetchone()
            row["id"] = last_id + 1
            row["prev_hash"] = prev
            row["hash"] = audit_hash(prev, row)
            conn.execute(_AUDIT_INSERT, [row[k] for k in _AUDIT_COLUMNS])

    def audit_rows(self, reference: str | None = None) -> list[dict[str, Any]]:
        if reference:
            cur = self.conn.execute("SELECT * FROM audit WHERE reference = ? ORDER BY id",
                                    (reference,))
        else:
            cur = self.conn.execute("SELECT * FROM audit ORDER BY id")
        return [dict(r) for r in cur]

    # the chain: head, anchors, streaming read, retention purge
    def audit_head(self) -> tuple[int, str]:
        row = self.conn.execute("SELECT last_id, last_hash FROM audit_head").fetchone()
        return int(row[0]), str(row[1])

    def audit_anchor(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM audit_anchor ORDER BY upto_id DESC "
                                "LIMIT 1").fetchone()
        return dict(row) if row else None

    def iter_audit(self, after: int = -1) -> Iterator[dict[str, Any]]:
        """Every audit row (after id `after`) in id order, read in pages (a log of years
        stays small in RAM)."""
        while True:
            rows = self.conn.execute("SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT 2000",
                                     (after,)).fetchall()
            if not rows:
                return
            for r in rows:
                yield dict(r)
            after = rows[-1]["id"]

    def audit_row(self, row_id: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM audit WHERE id = ?", (row_id,)).fetchone()
        return dict(row) if row else None

    def audit_count(self, after: int, upto: int) -> int:
        """How many rows have an id in (after, upto]."""
        return int(self.conn.execute("SELECT COUNT(*) FROM audit WHERE id > ? AND id <= ?",
                                     (after, upto)).fetchone()[0])

    # how far the chain was verified (formrelay.ops.audit.verify, incremental)
    def audit_verified(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT upto_id, upto_hash, anchor_id, at "
                                "FROM audit_verified").fetchone()
        return dict(row) if row else None

    def record_audit_verified(self, upto_id: int, upto_hash: str, anchor_id: int) -> None:
        """Remember that the chain verified up to row `upto_id`; never moves back."""
        with self._relaxed() as conn:
            conn.execute(
                "INSERT INTO audit_verified (one, upto_id, upto_hash, anchor_id, at) "
                "VALUES (1, ?, ?, ?, ?) ON CONFLICT (one) DO UPDATE SET "
                "upto_id = excluded.upto_id, upto_hash = excluded.upto_hash, "
                "anchor_id = excluded.anchor_id, at = excluded.at "
                "WHERE excluded.upto_id >= audit_verified.upto_id",
                (upto_id, upto_hash, anchor_id, iso(self.clock())))

    def purge_audit(self, before: datetime) -> tuple[int, int, str]:
        """Delete audit rows older than `before`, first recording an anchor (the last
        deleted id and hash) so the remaining chain still verifies; returns (rows
        deleted, anchor id, anchor hash) and logs the purge as an event of the chain."""
        with self.transaction() as conn:
            row = conn.execute("SELECT id, hash FROM audit WHERE at < ? ORDER BY id DESC "
                               "LIMIT 1", (iso(before),)).fetchone()
            if row is None:
                return 0, 0, ""
            upto_id, upto_hash = int(row[0]), str(row[1])
            conn.execute("INSERT INTO audit_anchor (at, upto_id, upto_hash) VALUES (?, ?, ?)",
                         (iso(self.clock()), upto_id, upto_hash))
            n = conn.execute("DELETE FROM audit WHERE id <= ?", (upto_id,)).rowcount
            self.audit(AuditAction.AUDIT_PURGED, detail=f"{n} rows up to #{upto_id} older than "
                                              f"{iso(before)[:10]}; anchor {upto_hash}")
        return n, upto_id, upto_hash

    # the inbox: who downloaded what, from the audit log
    def downloads(self, references: list[str]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {r: [] for r in references}
        for i in range(0, len(references), 500):
            chunk = references[i:i + 500]
            marks = ",".join("?" * len(chunk))
            cur = self.conn.execute(
                "SELECT reference, actor, at FROM audit WHERE action = 'downloaded' AND "  # noqa: S608 - placeholders only
                f"outcome = 'ok' AND reference IN ({marks}) ORDER BY id", chunk)
            for ref, actor, at in cur:
                out[ref].append((actor, at))
        return out
