"""The practice's answers to patients: one row per submission that offers replies.

The row holds the public key answers are encrypted to, the private key only wrapped
(replies/ does the cryptography), the answer's ciphertext, its state and the count of
wrong reply codes, raised in one UPDATE so processes cannot race past the limit.
Locking, expiry and purging delete the wrapped key and the answer.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..localtime import iso
from .base import Concern

COLUMNS = ("reference", "practice", "form_id", "recipients", "recipient_ids", "lang", "salt",
           "public_key", "wrapped_key", "email_sealed", "created_at", "expires_at")


class Replies(Concern):
    def add(self, row: dict[str, Any]) -> None:
        values = {**row, "recipients": json.dumps(list(row["recipients"])),
                  "recipient_ids": json.dumps(list(row.get("recipient_ids", ())))}
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO replies ({', '.join(COLUMNS)}) VALUES "  # noqa: S608 - fixed names
                         f"({', '.join(':' + c for c in COLUMNS)})", values)

    def get(self, reference: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM replies WHERE reference = ?",
                                (reference,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["recipients"] = json.loads(out["recipients"])
        out["recipient_ids"] = json.loads(out.get("recipient_ids") or "[]")
        for k in ("salt", "public_key", "wrapped_key", "answer"):
            if out.get(k) is not None:
                out[k] = bytes(out[k])
        return out

    def store_answer(self, reference: str, answer: bytes, by: str, now: datetime) -> bool:
        with self.transaction() as conn:
            cur = conn.execute("UPDATE replies SET answer = ?, answered_by = ?, answered_at = ?, "
                               "state = 'answered' WHERE reference = ? AND state = 'waiting'",
                               (answer, by, iso(now), reference))
            return bool(cur.rowcount)

    def claim(self, reference: str, now: datetime | None) -> bool:
        """Mark that the patient replied (once); `now=None` gives the claim back (the
        delivery failed). False when it was taken already."""
        with self.transaction() as conn:
            if now is None:
                conn.execute("UPDATE replies SET replied_at = NULL WHERE reference = ?",
                             (reference,))
                return True
            cur = conn.execute("UPDATE replies SET replied_at = ? WHERE reference = ? AND "
                               "state = 'answered' AND replied_at IS NULL",
                               (iso(now), reference))
            return bool(cur.rowcount)

    def take_try(self, reference: str, max_failures: int) -> bool:
        """Count one try of a reply code before it is checked (False: none is left, or
        the answer is gone), so tries checked in parallel cannot pass the limit."""
        with self.transaction() as conn:
            row = conn.execute("UPDATE replies SET failures = failures + 1 WHERE reference = ? "
                               "AND state IN ('waiting', 'answered') AND failures < ? "
                               "RETURNING failures", (reference, max_failures)).fetchone()
            return row is not None

    def give_back_try(self, reference: str) -> None:
        """The code was right (or was not checked): its try does not count."""
        with self.transaction() as conn:
            conn.execute("UPDATE replies SET failures = failures - 1 WHERE reference = ? "
                         "AND failures > 0", (reference,))

    def wrong_code(self, reference: str, max_failures: int,
                   now: datetime) -> tuple[int, bool]:
        """A taken try's code was wrong: (tries counted, locked now?)."""
        with self.transaction() as conn:
            row = conn.execute("SELECT failures FROM replies WHERE reference = ? "
                               "AND state IN ('waiting', 'answered')",
                               (reference,)).fetchone()
            if row is None:
                return max_failures, True
            locked = int(row[0]) >= max_failures
            if locked:
                self._drop_reply(conn, reference, "locked", now)
            return int(row[0]), locked

    def _drop_reply(self, conn: Any, reference: str, state: str, now: datetime) -> None:
        conn.execute("UPDATE replies SET state = ?, wrapped_key = NULL, answer = NULL, "
                     "email_sealed = '', deleted_at = ? WHERE reference = ?",
                     (state, iso(now), reference))

    def expire(self, now: datetime) -> list[dict[str, Any]]:
        with self.transaction() as conn:
            rows = [dict(r) for r in conn.execute(
                "SELECT reference, practice, form_id, state FROM replies WHERE state IN "
                "('waiting', 'answered') AND expires_at <= ?", (iso(now),))]
            for r in rows:
                self._drop_reply(conn, r["reference"], "expired", now)
        return rows
