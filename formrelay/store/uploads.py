"""Upload links and the documents sent through them: rows and ciphertext chunks.

A link row keeps the hash of its secret, the practice and the recipients' fingerprints
it was made for, its expiry and state (open, closed, expired) and the bytes its session
has used. A file row is one OpenPGP message; its ciphertext arrives in order as rows of
`upload_chunks` (the same on both engines), each appended in one transaction that also
checks the offset and the session's size limit, so two instances taking turns on one
upload cannot skip, repeat or overrun. Reads stream one chunk at a time.
uploads/ does the rest (links, mail, pages); this part only stores and counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ..localtime import iso
from .base import Concern

LINK_COLUMNS = ("id", "check_hash", "practice", "form_id", "reference", "recipients",
                "recipient_ids", "lang", "asked_by", "created_at", "expires_at", "note_sealed")
FILE_COLUMNS = ("id", "link_id", "practice", "reference", "recipients", "recipient_ids", "how",
                "created_at")


def _row(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("recipients", "recipient_ids"):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out


def _values(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "recipients": json.dumps(list(row["recipients"])),
            "recipient_ids": json.dumps(list(row.get("recipient_ids", ())))}


class Uploads(Concern):
    """Store upload links, their files and the files' ciphertext chunks."""

    # -- links ----------------------------------------------------------------------
    def add_link(self, row: dict[str, Any]) -> None:
        values = _values(row)
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO upload_links ({', '.join(LINK_COLUMNS)}) VALUES "  # noqa: S608 - fixed names
                         f"({', '.join(':' + c for c in LINK_COLUMNS)})", values)

    def link(self, link_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM upload_links WHERE id = ?",
                                (link_id,)).fetchone()
        return _row(row) if row else None

    def links_of(self, reference: str) -> list[dict[str, Any]]:
        return [_row(r) for r in self.conn.execute(
            "SELECT * FROM upload_links WHERE reference = ? ORDER BY created_at", (reference,))]

    def start_session(self, link_id: str, now: datetime) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE upload_links SET started_at = ? WHERE id = ? AND "
                         "started_at IS NULL", (iso(now), link_id))

    def close_link(self, link_id: str, state: str, now: datetime) -> bool:
        """End an open link's session ('closed' by the patient, or 'expired'); False if it
        was not open any more."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE upload_links SET state = ?, closed_at = ? WHERE id = ? "
                               "AND state = 'open'", (state, iso(now), link_id))
            return bool(cur.rowcount)

    def due_links(self, now: datetime) -> list[dict[str, Any]]:
        return [_row(r) for r in self.conn.execute(
            "SELECT * FROM upload_links WHERE state = 'open' AND expires_at <= ?", (iso(now),))]

    # -- files ----------------------------------------------------------------------
    def add_file(self, row: dict[str, Any]) -> None:
        values = _values(row)
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO upload_files ({', '.join(FILE_COLUMNS)}) VALUES "  # noqa: S608 - fixed names
                         f"({', '.join(':' + c for c in FILE_COLUMNS)})", values)

    def file(self, file_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM upload_files WHERE id = ?",
                                (file_id,)).fetchone()
        return _row(row) if row else None

    def files_of(self, *, link_id: str = "", practice: str = "",
                 state: str = "complete") -> list[dict[str, Any]]:
        """The files of one link, or of one practice, in one state, oldest first."""
        column, value = ("link_id", link_id) if link_id else ("practice", practice)
        return [_row(r) for r in self.conn.execute(
            f"SELECT * FROM upload_files WHERE {column} = ? AND state = ? "  # noqa: S608 - fixed names
            "ORDER BY created_at, id", (value, state))]

    def count_files(self, link_id: str) -> int:
        """Files started through a link, in any state."""
        row = self.conn.execute("SELECT COUNT(*) FROM upload_files WHERE link_id = ?",
                                (link_id,)).fetchone()
        return int(row[0])

    def append_chunk(self, file_id: str, offset: int, data: bytes,
                     limit: int) -> tuple[str, int]:
        """Append `data` at `offset` of a receiving file. Returns ("ok", new size),
        ("offset", stored size) when `offset` is not where the file ends (a retry of a
        chunk already stored, or one missed), ("limit", used bytes) when the session
        would pass `limit`, or ("gone", 0) when the file takes no more data."""
        with self.transaction() as conn:
            row = conn.execute("SELECT link_id, size, chunks FROM upload_files WHERE id = ? "
                               "AND state = 'receiving'", (file_id,)).fetchone()
            if row is None:
                return "gone", 0
            link_id, size, n = row[0], int(row[1]), int(row[2])
            if offset != size:
                return "offset", size
            used = conn.execute("UPDATE upload_links SET used_bytes = used_bytes + ? WHERE "
                                "id = ? AND state = 'open' AND used_bytes + ? <= ? "
                                "RETURNING used_bytes", (len(data), link_id, len(data),
                                                         limit)).fetchone()
            if used is None:
                return "limit", limit
            conn.execute("INSERT INTO upload_chunks (file_id, n, data) VALUES (?, ?, ?)",
                         (file_id, n, data))
            conn.execute("UPDATE upload_files SET size = size + ?, chunks = chunks + 1 "
                         "WHERE id = ?", (len(data), file_id))
            return "ok", size + len(data)

    def complete_file(self, file_id: str, sha256: str, now: datetime) -> bool:
        with self.transaction() as conn:
            cur = conn.execute("UPDATE upload_files SET state = 'complete', sha256 = ?, "
                               "completed_at = ? WHERE id = ? AND state = 'receiving'",
                               (sha256, iso(now), file_id))
            return bool(cur.rowcount)

    def old_files(self, before: datetime) -> list[dict[str, Any]]:
        """Complete files received before `before`, with their link's form (retention)."""
        return [_row(r) for r in self.conn.execute(
            "SELECT f.*, l.form_id FROM upload_files f JOIN upload_links l ON l.id = f.link_id "
            "WHERE f.state = 'complete' AND f.completed_at < ?", (iso(before),))]

    def chunks(self, file_id: str) -> Iterator[bytes]:
        """The file's ciphertext, one stored chunk at a time (never whole in memory)."""
        n = 0
        while True:
            row = self.conn.execute("SELECT data FROM upload_chunks WHERE file_id = ? AND "
                                    "n = ?", (file_id, n)).fetchone()
            if row is None:
                return
            yield bytes(row[0])
            n += 1

    def delete_file(self, file_id: str, now: datetime, *, give_back: bool) -> bool:
        """Delete a file's ciphertext (its content-free row stays for the audit trail);
        `give_back` returns its bytes to the session's limit (a refused file)."""
        with self.transaction() as conn:
            row = conn.execute("SELECT link_id, size FROM upload_files WHERE id = ? AND "
                               "state != 'deleted'", (file_id,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM upload_chunks WHERE file_id = ?", (file_id,))
            conn.execute("UPDATE upload_files SET state = 'deleted', deleted_at = ? "
                         "WHERE id = ?", (iso(now), file_id))
            if give_back:
                conn.execute("UPDATE upload_links SET used_bytes = used_bytes - ? WHERE id = ?",
                             (int(row[1]), row[0]))
            return True
