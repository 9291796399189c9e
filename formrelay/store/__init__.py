"""The only way into formrelay's database: a SQLite file (default) or PostgreSQL.

`Store` owns the schema (named, ordered migrations in `schema.py`, recorded in
`_migrations`), the connections (SQLite: one per thread, WAL mode, a busy timeout so
several gunicorn workers and the delivery worker can share the file; PostgreSQL, when
`server.database_url` names one: a psycopg pool, see postgres.py) and every read and
write; no caller knows which engine it talks to. It stores ciphertext and metadata
only; callers hand it what gpg wrote. Built on sqlite-utils; large ciphertexts are
streamed into and out of rows of 1 MB chunks (either engine) so they are never held
whole in memory. Each job is one module here, a part of `Store`: base (connections,
transactions, migrations, time helpers),
submissions, audit, outbox, clinician, protect (form tokens, rate limits), copies
(patient copies), refusals (refused anonymous attempts, counted), uploads (documents
from patients), replies (answers to patients), readers (invitations, browser-made keys)
and backup. Import everything from `formrelay.store`.
"""

from __future__ import annotations

from . import schema as schema  # registers the migrations, in their order
from .audit import AUDIT_FIELDS, DEFAULT_PRACTICE, GENESIS, AuditLog, audit_hash
from .backup import Backups
from .base import (
    CHUNK,
    MIGRATIONS,
    PG_MIGRATIONS,
    Migration,
    StoreBase,
    StoreConflict,
    StoreContended,
    StoreError,
    StoreNotWritable,
    disk_problem,
    iso,
    migration,
    parse_iso,
    utcnow,
)
from .clinician import Clinicians
from .copies import PatientCopies
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
    "Migration",
    "OutboxMail",
    "Store",
    "StoreConflict",
    "StoreContended",
    "StoreError",
    "StoreNotWritable",
    "audit_hash",
    "disk_problem",
    "iso",
    "migration",
    "parse_iso",
    "utcnow",
]


class Store(Submissions, Outbox, AuditLog, Clinicians, FormProtection, PatientCopies, Uploads,
            Replies, Refusals, Readers, Backups, StoreBase):
    """Thread-safe access to one database (the SQLite file at `path`, or PostgreSQL at
    `url`); open it once per process."""
