"""Patient copies' storage: the encrypted copy, its download and failure counts.

A copy's ciphertext is AES-GCM under a key that exists only in the patient's link
(patient_copy/copies.py does the cryptography); this part only stores it, counts downloads and
wrong pickup codes in single UPDATEs (so processes cannot race past a limit), and
deletes the ciphertext when a copy is used up, locked or expired. The content-free row
stays a while, so an old link gets the right page; reads never touch the ciphertext.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..localtime import iso
from .base import Concern
from .engines import Connection


class PatientCopies(Concern):
    """Store, count down, hand out and delete patient copies."""

    def add(self, row: dict[str, Any]) -> None:
        """Store a new copy (joins the submission's transaction); `practice` is the one it
        was made for, whatever the configuration says later."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO copies (id, reference, form_id, lang, check_hash, code_mac, "
                "quick_hash, quick_until, created_at, expires_at, max_downloads, ciphertext, "
                "size, practice) VALUES (:id, :reference, :form_id, :lang, :check_hash, "
                ":code_mac, :quick_hash, :quick_until, :created_at, :expires_at, "
                ":max_downloads, :ciphertext, :size, :practice)",
                {**row, "size": len(row["ciphertext"])})

    def get(self, copy_id: str) -> dict[str, Any] | None:
        """A copy's metadata (never its ciphertext)."""
        row = self.conn.execute("SELECT * FROM copy_meta WHERE id = ?", (copy_id,)).fetchone()
        return dict(row) if row else None

    def _drop_copy(self, conn: Connection, copy_id: str, state: str,
                   now: datetime) -> None:
        conn.execute("UPDATE copies SET state = ?, ciphertext = NULL, deleted_at = ? "
                     "WHERE id = ?", (state, iso(now), copy_id))

    def take(self, copy_id: str, now: datetime) -> tuple[bytes, int, bool] | None:
        """Count one download and return (ciphertext, downloads so far, used up); the
        last allowed download deletes the ciphertext. None if nothing is left."""
        with self.transaction() as conn:
            row = conn.execute(
                "UPDATE copies SET downloads = downloads + 1 WHERE id = ? AND state = 'active' "
                "AND downloads < max_downloads AND ciphertext IS NOT NULL "
                "RETURNING ciphertext, downloads, max_downloads", (copy_id,)).fetchone()
            if row is None:
                return None
            used_up = row[1] >= row[2]
            if used_up:
                self._drop_copy(conn, copy_id, "used_up", now)
            return bytes(row[0]), int(row[1]), used_up

    def wrong_code(self, copy_id: str, max_failures: int,
                   now: datetime) -> tuple[int, bool]:
        """Count a wrong pickup code; at `max_failures` the copy is locked and its
        ciphertext deleted. Returns (failures, locked)."""
        with self.transaction() as conn:
            row = conn.execute("UPDATE copies SET failures = failures + 1 WHERE id = ? AND "
                               "state = 'active' RETURNING failures", (copy_id,)).fetchone()
            if row is None:
                return max_failures, True
            locked = int(row[0]) >= max_failures
            if locked:
                self._drop_copy(conn, copy_id, "locked", now)
            return int(row[0]), locked

    def expire(self, now: datetime, copy_id: str | None = None) -> list[dict[str, Any]]:
        """Delete the ciphertext of active copies past their expiry; returns their rows."""
        with self.transaction() as conn:
            sql = "SELECT * FROM copy_meta WHERE state = 'active' AND expires_at <= ?"
            args: list[Any] = [iso(now)]
            if copy_id is not None:
                sql += " AND id = ?"
                args.append(copy_id)
            rows = [dict(r) for r in conn.execute(sql, args)]
            for r in rows:
                self._drop_copy(conn, r["id"], "expired", now)
        return rows

    def forget(self, before: datetime) -> int:
        """Remove the rows of copies deleted before `before` (they hold no content)."""
        with self.transaction() as conn:
            cur = conn.execute("DELETE FROM copies WHERE state != 'active' AND deleted_at < ?",
                               (iso(before),))
        return cur.rowcount
