"""`formrelay backup DEST`: a consistent copy of the database while the service runs.

The copy is made by `Store.backups.create` (SQLite's online backup API), so gunicorn workers
and the delivery worker keep writing meanwhile. What it holds is what the database
holds: ciphertext, metadata, the audit log (and, with hold mode, the clinicians'
password hashes and TOTP enrolments) - never a submission's plaintext, which never
reached the disk. The GnuPG home needs no backup: it is rebuilt from the key files
named in the config at every start.

Restore: stop the service and the worker, copy the backup to `<data_dir>/formrelay.db`
(owned by the service user, mode 0600), delete `formrelay.db-wal` and
`formrelay.db-shm` beside it, start both, run `formrelay check`.

With `server.database_url` (PostgreSQL) there is no file to copy: the command refuses
and names pg_dump, PostgreSQL's own consistent backup of a running database.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..localtime import utcnow
from ..settings import Settings
from ..store import Store, StoreError


def target_path(dest: str | Path) -> Path:
    """DEST itself, or a dated file inside it when DEST is a folder (or ends with /)."""
    path = Path(dest).expanduser()
    if path.is_dir() or str(dest).endswith(("/", os.sep)):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path / f"formrelay-{utcnow():%Y%m%dT%H%M%SZ}.db"
    return path


def run_backup(settings: Settings, dest: str | Path) -> tuple[Path, dict[str, int]]:
    """The backup's path and counts; StoreError ("backup failed: ...") if none was made."""
    try:
        return _backup(settings, dest)
    except (OSError, StoreError) as exc:  # a folder or disk refused it, or a bad copy
        raise StoreError(f"backup failed: {exc}") from None


def _backup(settings: Settings, dest: str | Path) -> tuple[Path, dict[str, int]]:
    if settings.server.database_url:
        raise StoreError("the data is in PostgreSQL (server.database_url), not in a file "
                         "formrelay can copy; back it up with pg_dump, e.g. `pg_dump "
                         "--format=custom --file=formrelay.dump DATABASE` (restore: "
                         "pg_restore --clean), see the README's \"The database\"")
    source = settings.db_path
    if not source.is_file():
        raise StoreError(f"no database at {source}; nothing to back up (is server.data_dir "
                         "right?)")
    path = target_path(dest).resolve()
    if path == source.resolve():
        raise StoreError(f"{path} is the live database; choose another destination")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = Store(source)
    try:
        counts = store.backups.create(path)
    finally:
        store.close()
    return path, counts
