"""Submissions: their metadata and ciphertext, and the notices of held ones.

A submission row holds what gpg wrote (ASCII-armoured ciphertext) and metadata only:
reference, form, time, delivery, status, size. Large ciphertexts are streamed into and
out of the BLOB with SQLite's incremental blob I/O (on PostgreSQL: into and out of rows
of `submission_chunks`, 1 MB each), so they are never whole in memory.
Held submissions also wait here for their batched notification mail (mail/notify.py), and
the retention purge forgets rows whose ciphertext is long gone.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from ..localtime import iso, parse_iso
from .base import Concern

# what reads give back: metadata and the ownership record, never the ciphertext
_COLUMNS = ("reference, form_id, received_at, delivery, status, size, file_count, deleted_at, "
            "practice, recipients, fingerprints, keep_days")


def _quote(column: str) -> str:
    """A column name for SQL (names come from code, never from a request)."""
    return '"' + column.replace('"', '""') + '"'


def _source(ciphertext: Path | bytes) -> IO[bytes]:
    return io.BytesIO(ciphertext) if isinstance(ciphertext, bytes) else ciphertext.open("rb")


class Submissions(Concern):
    """Store, read, stream and delete submissions; queue and batch held notices."""

    def add(self, row: dict[str, Any], ciphertext: Path | bytes) -> None:
        """Commit a submission row and its ciphertext (copied from the file gpg wrote, or
        the bytes of a small one encrypted in process), streamed in, never whole in
        memory. Joins the caller's transaction, where the caller writes what belongs
        with it (outbox, audit, the form token) and runs the whole under
        `store.retried`."""
        size = len(ciphertext) if isinstance(ciphertext, bytes) else ciphertext.stat().st_size
        with self.transaction() as conn, _source(ciphertext) as src:
            cols = ", ".join(_quote(c) for c in row)
            marks = ", ".join("?" * len(row))
            self.engine.put_ciphertext(
                conn, f"INSERT INTO submissions ({cols}, size, ciphertext) "  # noqa: S608 - quoted names
                      f"VALUES ({marks}, ?, ", [*row.values(), size], row["reference"], src, size)

    def get(self, reference: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM submissions "  # noqa: S608 - fixed names
                                "WHERE reference = ?", (reference,)).fetchone()
        return dict(row) if row else None

    def rows(self, form_ids: list[str] | None = None, status: str | None = None,
             practice: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {_COLUMNS} FROM submissions WHERE 1=1"  # noqa: S608 - fixed names
        args: list[Any] = []
        if practice is not None:
            sql += " AND practice = ?"
            args.append(practice)
        if form_ids is not None:
            sql += f" AND form_id IN ({','.join('?' * len(form_ids))})"
            args += form_ids
        if status:
            sql += " AND status = ?"
            args.append(status)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY received_at DESC", args)]

    def _size(self, reference: str) -> int:
        """The size of a submission that still has its ciphertext; KeyError if not."""
        row = self.conn.execute("SELECT size FROM submissions WHERE reference = ? "
                                "AND ciphertext IS NOT NULL AND size > 0",
                                (reference,)).fetchone()
        if not row:
            raise KeyError(reference)
        return int(row[0])

    def copy_to(self, reference: str, dest: IO[bytes]) -> int:
        """Stream a submission's ciphertext into `dest`; returns bytes written."""
        size = self._size(reference)
        for chunk in self.engine.ciphertext(reference):
            dest.write(chunk)
        return size

    def ciphertext(self, reference: str) -> bytes:
        buf = io.BytesIO()
        self.copy_to(reference, buf)
        return buf.getvalue()

    def set_status(self, reference: str, status: str, *, drop_ciphertext: bool = False) -> None:
        with self.transaction() as conn:
            if drop_ciphertext:
                conn.execute("UPDATE submissions SET status = ?, ciphertext = NULL, "
                             "deleted_at = ? WHERE reference = ?",
                             (status, iso(self.clock()), reference))
                self.engine.drop_ciphertext(conn, reference)
            else:
                conn.execute("UPDATE submissions SET status = ? WHERE reference = ?",
                             (status, reference))

    def stream(self, reference: str) -> Iterator[bytes]:
        """The ciphertext in chunks (for a download response), never whole in memory."""
        self._size(reference)
        yield from self.engine.ciphertext(reference)

    # batched notifications of held submissions
    def add_notice(self, reference: str, form_id: str, received_at: datetime,
                   practice: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO held_notices (reference, form_id, received_at, practice) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         (reference, form_id, iso(received_at), practice))

    def notices_due(self, form_id: str, batch_minutes: int,
                    practice: str) -> list[dict[str, Any]] | None:
        """Unmailed notices of a form, recorded for `practice`, if its next batch is due
        now (and mark them mailed, with the batch time); None when nothing is due. Call
        inside a transaction with the enqueue, so a batch is mailed exactly once."""
        now = self.clock()
        with self.transaction() as conn:
            self.store.lock(f"notices {form_id}")  # one batch at a time per form, in every process
            last = conn.execute("SELECT last_at FROM notice_batches WHERE form_id = ?",
                                (form_id,)).fetchone()
            if last and parse_iso(last[0]) + timedelta(minutes=batch_minutes) > now:
                return None
            rows = [dict(r) for r in conn.execute(
                "SELECT reference, received_at FROM held_notices WHERE form_id = ? AND "
                "practice = ? AND mailed_at IS NULL ORDER BY received_at", (form_id, practice))]
            if not rows:
                return None
            conn.execute("UPDATE held_notices SET mailed_at = ? WHERE form_id = ? AND "
                         "practice = ? AND mailed_at IS NULL", (iso(now), form_id, practice))
            conn.execute("INSERT INTO notice_batches (form_id, last_at) VALUES (?, ?) "
                         "ON CONFLICT (form_id) DO UPDATE SET last_at = excluded.last_at",
                         (form_id, iso(now)))
        return rows

    def notice_forms(self) -> list[tuple[str, str]]:
        """(form, practice) of every notice still to mail."""
        return [(str(r[0]), str(r[1])) for r in self.conn.execute(
            "SELECT DISTINCT form_id, practice FROM held_notices WHERE mailed_at IS NULL")]

    def fill_ownership(self, owner: Callable[[str], tuple[str, list[str], list[str], int]]
                       ) -> int:
        """Complete the ownership record of rows written before it was kept (migration
        0080 took what the audit chains tell): `owner(form_id)` gives the practice,
        recipient ids, fingerprints and retention days the configuration has for that
        form now. Returns how many submissions it completed; nothing after the first
        run, as every new row is written with its record. Every process start calls it,
        so it looks first with reads and takes the writers' turn only when a row needs
        filling."""
        if not any(self.conn.execute(
                f"SELECT 1 FROM {table} WHERE practice = '' LIMIT 1").fetchone()  # noqa: S608 - fixed names
                for table in ("copies", "held_notices", "outbox")) and \
                not self.conn.execute("SELECT 1 FROM submissions WHERE practice = '' OR "
                                      "recipients = '' OR keep_days = 0 LIMIT 1").fetchone():
            return 0
        done = 0
        with self.transaction() as conn:
            forms = [str(r[0]) for r in conn.execute(
                "SELECT DISTINCT form_id FROM submissions WHERE practice = '' OR "
                "recipients = '' OR keep_days = 0")]
            for form_id in forms:
                practice, recipients, fingerprints, days = owner(form_id)
                cur = conn.execute(
                    "UPDATE submissions SET practice = CASE WHEN practice = '' THEN ? ELSE "
                    "practice END, recipients = CASE WHEN recipients = '' THEN ? ELSE "
                    "recipients END, fingerprints = CASE WHEN fingerprints = '' THEN ? ELSE "
                    "fingerprints END, keep_days = CASE WHEN keep_days = 0 THEN ? ELSE "
                    "keep_days END WHERE form_id = ? AND (practice = '' OR recipients = '' "
                    "OR keep_days = 0)", (practice, json.dumps(recipients),
                                          json.dumps(fingerprints), days, form_id))
                done += cur.rowcount
            for table in ("copies", "held_notices", "outbox"):
                conn.execute(f"UPDATE {table} SET practice = COALESCE((SELECT s.practice "  # noqa: S608 - fixed names
                             f"FROM submissions AS s WHERE s.reference = {table}.reference), "
                             f"'') WHERE practice = ''")
            for table in ("copies", "held_notices", "outbox"):  # of no (stored) submission
                for (form_id,) in conn.execute(f"SELECT DISTINCT form_id FROM {table} "  # noqa: S608 - fixed names
                                               "WHERE practice = ''").fetchall():
                    conn.execute(f"UPDATE {table} SET practice = ? WHERE practice = '' AND "  # noqa: S608 - fixed names
                                 "form_id = ?", (owner(str(form_id))[0], form_id))
        return done

    def purge_metadata(self, before: datetime) -> int:
        """Forget submission rows whose ciphertext is long gone (kept as long as the audit
        log, so an export still names the form); and their notices."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM held_notices WHERE received_at < ?", (iso(before),))
            return conn.execute("DELETE FROM submissions WHERE ciphertext IS NULL AND "
                                "received_at < ?", (iso(before),)).rowcount
