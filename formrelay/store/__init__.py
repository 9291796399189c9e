"""The only way into formrelay's database: a SQLite file (default) or PostgreSQL.

`Store` is composed by concern, like sqlite-utils' `db["table"]`: each job is one
module here and one attribute of the store: `store.submissions` (ciphertexts, held
notices), `store.outbox` (the mail queue), `store.audit` (the hash-chained log),
`store.clinicians` (accounts, second factor, sessions, API tokens), `store.protection`
(form tokens, rate limits), `store.copies` (patient copies), `store.uploads` (documents
from patients), `store.replies` (answers to patients), `store.refusals` (refused
anonymous attempts, counted), `store.readers` (invitations, browser-made keys, roles)
and `store.backups`. What several concerns write together is one transaction: the
caller opens `with store.transaction():` and calls them inside it (a nested transaction
joins the outer one).

Under them, base.py holds the transactions and the migration runner, schema.py the
named, ordered migrations, and engines/ the one `Engine` interface with SQLite (one
connection per thread, WAL, a file shared by every process) and PostgreSQL (a psycopg
pool, when `server.database_url` names one) behind it; no concern and no caller asks
which engine it has. The store keeps ciphertext and metadata only; callers hand it what
gpg wrote, and ciphertexts over 1 MB are streamed in and out of 1 MB rows on either
engine, never whole in memory.
Import everything from `formrelay.store`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ..localtime import utcnow
from . import schema as schema  # registers the migrations, in their order
from .audit import AUDIT_FIELDS, DEFAULT_PRACTICE, GENESIS, AuditLog, audit_hash
from .backup import Backups
from .base import MIGRATIONS, PG_MIGRATIONS, StoreBase, migration
from .clinician import Clinicians
from .copies import PatientCopies
from .engines import CHUNK, Engine, Migration
from .engines.sqlite import disk_problem
from .errors import StoreConflict, StoreContended, StoreError, StoreNotWritable
from .outbox import Outbox, OutboxMail
from .protect import FormProtection
from .readers import Readers
from .refusals import REFUSALS_KEPT_DAYS, Refusals
from .replies import Replies
from .submissions import Submissions
from .uploads import Uploads

__all__ = [
    "AUDIT_FIELDS",
    "CHUNK",
    "DEFAULT_PRACTICE",
    "GENESIS",
    "MIGRATIONS",
    "PG_MIGRATIONS",
    "REFUSALS_KEPT_DAYS",
    "Engine",
    "Migration",
    "OutboxMail",
    "Store",
    "StoreConflict",
    "StoreContended",
    "StoreError",
    "StoreNotWritable",
    "audit_hash",
    "disk_problem",
    "migration",
]


class Store(StoreBase):
    """Thread-safe access to one database (the SQLite file at `path`, or PostgreSQL at
    `url`); open it once per process."""

    submissions: Submissions
    outbox: Outbox
    audit: AuditLog
    clinicians: Clinicians
    protection: FormProtection
    copies: PatientCopies
    uploads: Uploads
    replies: Replies
    refusals: Refusals
    readers: Readers
    backups: Backups

    def __init__(self, path: Path, clock: Callable[[], datetime] = utcnow, *, url: str = ""):
        self.submissions = Submissions(self)
        self.outbox = Outbox(self)
        self.audit = AuditLog(self)
        self.clinicians = Clinicians(self)
        self.protection = FormProtection(self)
        self.copies = PatientCopies(self)
        self.uploads = Uploads(self)
        self.replies = Replies(self)
        self.refusals = Refusals(self)
        self.readers = Readers(self)
        self.backups = Backups(self)
        super().__init__(path, clock, url=url)  # opens the engine, migrates

    def _before_commit(self) -> None:
        self.audit._flush()

    def _transaction_ended(self) -> None:
        self.audit._drop()
