"""Backups of the database and the newest time it recorded.

`create` takes one consistent snapshot (the engine's: SQLite's online backup API) while
the service keeps writing, checks it and renames it into place (mode 0600); the
`formrelay backup` command (formrelay.ops.backup) picks the file name and reports.
`newest_timestamp` lets `formrelay check` notice a clock that went back behind what
the database already holds.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..localtime import parse_iso
from .base import Concern


class Backups(Concern):
    """Snapshot the database; report its newest timestamp."""

    def create(self, dest: Path) -> dict[str, int]:
        """A consistent copy of the database at `dest`, checked, mode 0600, while the
        service keeps writing; returns what the copy holds (submissions, ciphertexts,
        audit events, bytes). SQLite only: a PostgreSQL database is backed up with its
        own tools (pg_dump), which the error says."""
        return self.engine.backup(dest)

    def newest_timestamp(self) -> datetime | None:
        """The latest time this database recorded; a clock behind it has gone wrong."""
        row = self.conn.execute(
            "SELECT MAX(t) FROM (SELECT MAX(at) AS t FROM audit UNION ALL "
            "SELECT MAX(received_at) FROM submissions UNION ALL "
            "SELECT MAX(applied_at) FROM _migrations) AS newest").fetchone()
        return parse_iso(row[0]) if row and row[0] else None
