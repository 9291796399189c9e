"""Submissions: their metadata and ciphertext, and the notices of held ones.

A submission row holds what gpg wrote (ASCII-armoured ciphertext) and metadata only:
reference, form, time, delivery, status, size. A ciphertext of up to `CHUNK` (1 MB) is
in the row's BLOB; a larger one (a post with files) is streamed into and out of rows of
`submission_chunks`, 1 MB each, so it is never whole in memory (on PostgreSQL every
ciphertext is). Not SQLite's incremental blob I/O for those: columns added later follow
`ciphertext` in the row, and SQLite then builds the whole record in memory, the
zeroblob written out in full, ~2.7x the ciphertext (75 MB for a 20 MB upload).
Held submissions also wait here for their batched notification mail (mail/notify.py), and
the retention purge forgets rows whose ciphertext is long gone.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from .base import CHUNK, StoreBase, iso, parse_iso

# what reads give back: metadata and the ownership record, never the ciphertext
_COLUMNS = ("reference, form_id, received_at, delivery, status, size, file_count, deleted_at, "
            "practice, recipients, fingerprints, keep_days")


def _quote(column: str) -> str:
    """A column name for SQL (names come from code, never from a request)."""
    return '"' + column.replace('"', '""') + '"'


def _source(ciphertext: Path | bytes) -> IO[bytes]:
    return io.BytesIO(ciphertext) if isinstance(ciphertext, bytes) else ciphertext.open("rb")


class Submissions(StoreBase):
    """Store, read, stream and delete submissions; queue and batch held notices."""

    def add_submission(self, row: dict[str, Any], ciphertext: Path | bytes,
                       also: Callable[[], None] | None = None) -> None:
        """Commit a submission row and its ciphertext (copied from the file gpg wrote, or
        the bytes of a small one encrypted in process), plus whatever `also` writes
        (outbox, audit, the form token), in one transaction. On PostgreSQL a transaction
        given up in a conflict with another is run again (`also` too), so a busy moment
        does not turn the patient away."""
        size = len(ciphertext) if isinstance(ciphertext, bytes) else ciphertext.stat().st_size
        if self.engine == "postgresql":
            self.retried(lambda: self._add_chunked(row, ciphertext, size, also))
            return
        if size > CHUNK:
            self._add_chunked(row, ciphertext, size, also)
            return
        data = ciphertext if isinstance(ciphertext, bytes) else ciphertext.read_bytes()
        with self.transaction() as conn:
            cols = ", ".join(_quote(c) for c in row)
            marks = ", ".join("?" * len(row))
            conn.execute(f"INSERT INTO submissions ({cols}, size, ciphertext) "  # noqa: S608 - quoted names
                         f"VALUES ({marks}, ?, ?)", [*row.values(), size, data])
            if also:
                also()

    def _add_chunked(self, row: dict[str, Any], ciphertext: Path | bytes, size: int,
                     also: Callable[[], None] | None) -> None:
        """The row (an empty marker in `ciphertext`), then the file in rows of `CHUNK`
        bytes, one read at a time."""
        with self.transaction() as conn:
            cols = ", ".join(_quote(c) for c in row)
            marks = ", ".join("?" * len(row))
            conn.execute(f"INSERT INTO submissions ({cols}, size, ciphertext) "  # noqa: S608 - quoted names
                         f"VALUES ({marks}, ?, ?)", [*row.values(), size, b""])
            with _source(ciphertext) as src:
                n = 0
                while chunk := src.read(CHUNK):
                    conn.execute("INSERT INTO submission_chunks (reference, n, data) "
                                 "VALUES (?, ?, ?)", (row["reference"], n, chunk))
                    n += 1
                    del chunk
            if also:
                also()

    def _chunks(self, reference: str) -> Iterator[bytes]:
        """A chunked ciphertext's chunks in order, one query each."""
        n = 0
        while True:
            row = self.conn.execute("SELECT data FROM submission_chunks WHERE reference = ? "
                                    "AND n = ?", (reference, n)).fetchone()
            if row is None:
                return
            yield bytes(row[0])
            n += 1

    def submission(self, reference: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM submissions "  # noqa: S608 - fixed names
                                "WHERE reference = ?", (reference,)).fetchone()
        return dict(row) if row else None

    def submissions(self, form_ids: list[str] | None = None, status: str | None = None,
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

    def _ciphertext_row(self, reference: str) -> tuple[int, int]:
        """(rowid, size) of a submission that still has its ciphertext, rowid 0 when the
        ciphertext is in `submission_chunks` (the row holds an empty marker); KeyError if
        there is none."""
        rowid = "0" if self.engine == "postgresql" else \
            "CASE WHEN length(ciphertext) = 0 THEN 0 ELSE rowid END"
        row = self.conn.execute(f"SELECT {rowid}, size FROM submissions WHERE reference = ? "  # noqa: S608 - fixed text
                                "AND ciphertext IS NOT NULL AND size > 0",
                                (reference,)).fetchone()
        if not row:
            raise KeyError(reference)
        return int(row[0]), int(row[1])

    def copy_ciphertext(self, reference: str, dest: IO[bytes]) -> int:
        """Stream a submission's ciphertext into `dest`; returns bytes written."""
        rowid, size = self._ciphertext_row(reference)
        if not rowid:
            for chunk in self._chunks(reference):
                dest.write(chunk)
            return size
        with self.conn.blobopen("submissions", "ciphertext", rowid, readonly=True) as blob:
            shutil.copyfileobj(blob, dest, CHUNK)
        return size

    def ciphertext(self, reference: str) -> bytes:
        buf = io.BytesIO()
        self.copy_ciphertext(reference, buf)
        return buf.getvalue()

    def set_status(self, reference: str, status: str, *, drop_ciphertext: bool = False) -> None:
        with self.transaction() as conn:
            if drop_ciphertext:
                conn.execute("UPDATE submissions SET status = ?, ciphertext = NULL, "
                             "deleted_at = ? WHERE reference = ?",
                             (status, iso(self.clock()), reference))
                conn.execute("DELETE FROM submission_chunks WHERE reference = ?",
                             (reference,))
            else:
                conn.execute("UPDATE submissions SET status = ? WHERE reference = ?",
                             (status, reference))

    def stream_ciphertext(self, reference: str) -> Iterator[bytes]:
        """The ciphertext in chunks (for a download response), never whole in memory."""
        rowid, _size = self._ciphertext_row(reference)
        if not rowid:
            yield from self._chunks(reference)
            return
        with self.conn.blobopen("submissions", "ciphertext", rowid, readonly=True) as blob:
            while chunk := blob.read(CHUNK):
                yield chunk

    # batched notifications of held submissions
    def notice_add(self, reference: str, form_id: str, received_at: datetime,
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
            self.lock(f"notices {form_id}")  # one batch at a time per form, in every process
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
