"""The only way into formrelay's SQLite database.

`Store` owns the schema (named, ordered migrations in `schema.py`, recorded in
`_migrations`), the connections (one per thread, WAL mode, a busy timeout so several
gunicorn workers and the delivery worker can share the file) and every read and write.
It stores ciphertext and metadata only; callers hand it what gpg wrote. Built on
sqlite-utils; large ciphertexts are streamed into and out of BLOBs with SQLite's
incremental blob I/O so they are never held whole in memory. Each job is one module
here, a part of `Store`: base (connections, transactions, migrations, time helpers),
submissions, audit, outbox, clinician, protect (form tokens, rate limits), copies
(patient copies) and backup. Import everything from `formrelay.store`.
"""

from __future__ import annotations

from . import schema as schema  # registers the migrations, in their order
from .audit import AUDIT_FIELDS, GENESIS, AuditLog, audit_hash
from .backup import Backups
from .base import (
    CHUNK,
    MIGRATIONS,
    Migration,
    StoreBase,
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
from .submissions import Submissions

__all__ = [
    "AUDIT_FIELDS",
    "CHUNK",
    "GENESIS",
    "MIGRATIONS",
    "Migration",
    "OutboxMail",
    "Store",
    "StoreError",
    "StoreNotWritable",
    "audit_hash",
    "disk_problem",
    "iso",
    "migration",
    "parse_iso",
    "utcnow",
]


class Store(Submissions, Outbox, AuditLog, Clinicians, FormProtection, PatientCopies, Backups,
            StoreBase):
    """Thread-safe access to one database file; open it once per process."""
