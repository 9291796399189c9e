"""The store's own errors, the same whichever engine holds the data."""

from __future__ import annotations

from ..errors import OperatorError


class StoreError(OperatorError):
    """The database cannot be used; the message says what to do."""


class StoreConflict(StoreError):
    """A row with this key exists already (e.g. a submission reference drawn twice); the
    transaction was rolled back whole. Whatever the engine."""


class StoreNotWritable(StoreError):
    """The disk refused a write (full, read-only, I/O error). The transaction was rolled
    back whole; the message (paths and the disk's reason, never content) is for the
    operator, the patient is told the form is temporarily unavailable."""


class StoreContended(StoreNotWritable):
    """PostgreSQL gave the transaction up in a conflict with another one (a deadlock, or
    a serialization failure) and rolled it back whole. Nothing is wrong with the database:
    the same work run again normally succeeds (`StoreBase.retried`); only when the
    retries run out is it answered like any other unwritable database (503)."""
