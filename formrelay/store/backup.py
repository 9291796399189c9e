"""Backups of the database and the newest time it recorded.

`backup` takes one consistent snapshot with SQLite's online backup API while the
service keeps writing, checks it and renames it into place (mode 0600); the
`formrelay backup` command (formrelay.ops.backup) picks the file name and reports.
`newest_timestamp` lets `formrelay check` notice a clock that went back behind what
the database already holds.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path

from .base import StoreBase, StoreError, parse_iso


class Backups(StoreBase):
    """Snapshot the database; report its newest timestamp."""

    def backup(self, dest: Path) -> dict[str, int]:
        """Copy the database to `dest` with SQLite's online backup API: one consistent
        snapshot while the service keeps writing (in WAL mode the copy is one read
        transaction; writers are not blocked). Written beside `dest`, checked, then
        renamed into place with mode 0600; returns what the copy holds. SQLite only: a
        PostgreSQL database is backed up with its own tools (pg_dump)."""
        if self.engine != "sqlite":
            raise StoreError(f"formrelay backup copies the SQLite file; this deployment keeps "
                             f"its data in PostgreSQL ({self.where}): back it up with "
                             "pg_dump (e.g. pg_dump --format=custom --file=formrelay.dump "
                             "DBNAME), see the README's \"Backups\"")
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        tmp.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            target = sqlite3.connect(tmp)
            try:
                self.conn.backup(target)  # all pages in one step: a single snapshot
                # a self-contained file: no -wal/-shm beside it
                target.execute("PRAGMA journal_mode=DELETE")
                problem = target.execute("PRAGMA integrity_check").fetchone()[0]
                if problem != "ok":
                    raise StoreError(f"backup {dest} failed its integrity check ({problem}); "
                                     "nothing was written")
                counts = {
                    "submissions": target.execute(
                        "SELECT COUNT(*) FROM submissions").fetchone()[0],
                    "ciphertexts": target.execute(
                        "SELECT COUNT(*) FROM submissions WHERE ciphertext IS NOT NULL "
                        "AND size > 0").fetchone()[0],
                    "audit_events": target.execute("SELECT COUNT(*) FROM audit").fetchone()[0],
                }
            finally:
                target.close()
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        counts["bytes"] = dest.stat().st_size
        return counts

    def newest_timestamp(self) -> datetime | None:
        """The latest time this database recorded; a clock behind it has gone wrong."""
        row = self.conn.execute(
            "SELECT MAX(t) FROM (SELECT MAX(at) AS t FROM audit UNION ALL "
            "SELECT MAX(received_at) FROM submissions UNION ALL "
            "SELECT MAX(applied_at) FROM _migrations) AS newest").fetchone()
        return parse_iso(row[0]) if row and row[0] else None
