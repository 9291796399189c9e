"""The PostgreSQL engine under `Store`: a connection pool, a connection-like adapter.

Chosen by `server.database_url = "postgresql://..."` (or FORMRELAY_DATABASE_URL). The
concerns of `Store` write their SQL once, with `?` placeholders as SQLite takes them;
`PgConnection` turns those into psycopg's and gives back rows that read like
`sqlite3.Row` (by index, by name, `dict(row)`), so no caller knows which engine it
talks to. Connections come from a psycopg_pool pool: a transaction holds one until it
ends, a read outside a transaction borrows one for that statement only. Nothing here
touches local files: several app instances and workers on several machines share the
one database, and the database itself serialises what must happen once (row locks,
`FOR UPDATE SKIP LOCKED`, advisory locks).
"""

from __future__ import annotations

import atexit
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

try:  # the optional extra: pip install formrelay[postgres]
    import psycopg
    import psycopg_pool
except ImportError:  # pragma: no cover - reported by open_pool
    psycopg = None  # type: ignore[assignment]
    psycopg_pool = None  # type: ignore[assignment]

from ...settings import database_url_problem
from ..errors import StoreConflict, StoreContended, StoreError, StoreNotWritable
from . import Connection, Migration, put_chunks, read_chunks

POOL_MAX = 10  # connections per process; a gunicorn worker uses one per thread at most
CONNECT_SECONDS = 10


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def open_pool(url: str) -> Any:
    """A connection pool for `url`, opened and checked once: a wrong URL, an unreachable
    server or a refused login is a `StoreError` at start-up, saying which."""
    problem = database_url_problem(url)
    if problem:
        raise StoreError(f"database_url {redact(url)}: {problem}")
    if psycopg is None or psycopg_pool is None:
        raise StoreError("database_url names PostgreSQL but psycopg is not installed; "
                         "install it with: pip install 'formrelay[postgres]'")
    pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=POOL_MAX, open=False,
                                       timeout=CONNECT_SECONDS, name="formrelay",
                                       num_workers=1,
                                       kwargs={"autocommit": True,
                                               "connect_timeout": CONNECT_SECONDS})
    try:
        pool.open(wait=True, timeout=CONNECT_SECONDS)
    except (psycopg_pool.PoolTimeout, psycopg.Error) as exc:
        pool.close()
        why = _first_error(url) or str(exc)
        raise StoreError(f"cannot connect to the database {redact(url)}: {why}; check "
                         "database_url (host, port, user, password, database name) and that "
                         "PostgreSQL is running") from None
    return pool


def _first_error(url: str) -> str:
    """The server's own reason a connection fails (the pool only says it timed out)."""
    try:
        psycopg.connect(url, connect_timeout=CONNECT_SECONDS).close()
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return ""


# -- SQL in SQLite's dialect -> psycopg's ----------------------------------------------
_TOKEN = re.compile(r"'(?:[^']|'')*'|\?|:[A-Za-z_]\w*|%")


def translate(sql: str) -> str:
    """`?` -> `%s`, `:name` -> `%(name)s`, a literal `%` doubled; string literals kept."""
    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok.startswith("'"):
            return tok
        if tok == "?":
            return "%s"
        if tok == "%":
            return "%%"
        if m.start() > 0 and sql[m.start() - 1] == ":":  # a cast (x::int)
            return tok
        return f"%({tok[1:]})s"
    return _TOKEN.sub(sub, sql)


class Row(tuple):
    """A result row read like sqlite3.Row: row[0], row["name"], dict(row)."""

    _names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._names


def _row_factory(cursor: Any) -> Any:
    names = tuple(d.name for d in cursor.description or ())
    cls = type("Row", (Row,), {"_names": names, "__slots__": ()})

    def make(values: Sequence[Any]) -> Row:
        return cls(bytes(v) if isinstance(v, memoryview) else v for v in values)
    return make


class Result:
    """A finished statement: its rows (fetched whole: statements here return pages or
    single rows), `rowcount`, and `lastrowid` (the `id` a `RETURNING id` gave)."""

    def __init__(self, rows: list[Any], rowcount: int):
        self._rows = rows
        self._pos = 0
        self.rowcount = rowcount

    @property
    def lastrowid(self) -> int | None:
        return int(self._rows[0][0]) if self._rows else None

    def fetchone(self) -> Any:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchall(self) -> list[Any]:
        rows, self._pos = self._rows[self._pos:], len(self._rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        while (row := self.fetchone()) is not None:
            yield row


class PgConnection:
    """What the store's parts call `conn`: execute and executemany in SQLite's dialect.
    Inside `transaction()` every statement runs on the transaction's connection; outside,
    each borrows one from the pool."""

    def __init__(self, pool: Any):
        self.pool = pool
        self._local = threading.local()
        # closed before the interpreter tears down (a gevent worker cannot stop the
        # pool's helper threads from a finaliser)
        atexit.register(self.close)

    @property
    def tx(self) -> Any:
        return getattr(self._local, "tx", None)

    @property
    def conn(self) -> PgConnection:
        """Itself: a migration step written as `db.conn.execute(...)` runs here too."""
        return self

    @property
    def in_transaction(self) -> bool:
        return self.tx is not None

    @contextmanager
    def transaction(self, *, isolation: str = "READ COMMITTED",
                    relaxed: bool = False) -> Iterator[PgConnection]:
        with self.pool.connection() as conn:
            conn.execute(f"BEGIN ISOLATION LEVEL {isolation}")
            self._local.tx = conn
            try:
                if relaxed:  # counters and leases: no wait for the WAL flush
                    conn.execute("SET LOCAL synchronous_commit = off")
                yield self
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass  # a broken connection: the pool discards it
                raise
            finally:
                self._local.tx = None

    def _run(self, conn: Any, sql: str, params: Any, many: bool = False) -> Result:
        with conn.cursor(row_factory=_row_factory) as cur:
            if many:
                cur.executemany(translate(sql), params)
                return Result([], cur.rowcount)
            cur.execute(translate(sql), params if params else None)
            rows = cur.fetchall() if cur.description is not None else []
            return Result(rows, cur.rowcount)

    def execute(self, sql: str, params: Any = ()) -> Result:
        if self.tx is not None:
            return self._run(self.tx, sql, params)
        with self.pool.connection() as conn:
            return self._run(conn, sql, params)

    def executemany(self, sql: str, params: Iterable[Any]) -> Result:
        if self.tx is not None:
            return self._run(self.tx, sql, list(params), many=True)
        with self.transaction():
            return self._run(self.tx, sql, list(params), many=True)

    def executescript(self, script: str) -> None:
        """DDL of a migration (no parameters; `%` stays as written)."""
        conn = self.tx
        if not script.strip():
            return
        if conn is None:
            raise RuntimeError("executescript runs inside a migration's transaction")
        conn.execute(script.encode())  # bytes: psycopg leaves % alone, several statements

    def close(self) -> None:
        if not self.pool.closed:
            self.pool.close()
            atexit.unregister(self.close)


def _problem(exc: BaseException) -> str | None:
    """Why PostgreSQL refused a write (server gone, disk full, read-only), or None."""
    if psycopg is None or psycopg_pool is None:  # pragma: no cover - no engine installed
        return None
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return "no database connection (server unreachable or every connection busy)"
    if isinstance(exc, psycopg.errors.DiskFull | psycopg.errors.InsufficientResources):
        return "disk full"
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return "read-only"
    if isinstance(exc, psycopg.OperationalError):
        return "connection lost"
    return None


class PostgresEngine:
    """PostgreSQL at `url`: a pool, the database's own locks, chunked ciphertexts."""

    name = "postgresql"
    folder: Path | None = None  # nothing on local disk
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"  # workers claiming at once get other rows

    def __init__(self, url: str):
        self.url = url
        self.where = redact(url)
        self.pg = PgConnection(open_pool(url))
        self.errors: tuple[type[Exception], ...] = (StoreError, psycopg.Error,
                                                    psycopg_pool.PoolTimeout)

    @property
    def conn(self) -> PgConnection:
        return self.pg

    def close(self) -> None:
        self.pg.close()

    @contextmanager
    def transaction(self, before_commit: Callable[[], None], *,
                    relaxed: bool = False) -> Iterator[PgConnection]:
        """One transaction (READ COMMITTED) on a pooled connection; what must happen once
        takes a row or advisory lock (`lock`). `relaxed`: synchronous_commit off."""
        with self.pg.transaction(relaxed=relaxed) as pg:
            yield pg
            before_commit()

    @contextmanager
    def snapshot(self) -> Iterator[PgConnection]:
        with self.pg.transaction(isolation="REPEATABLE READ") as pg:
            yield pg

    def lock(self, key: str) -> None:
        """An advisory transaction lock, valid across every process on the database."""
        self.pg.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    def failure(self, exc: BaseException) -> StoreError | None:
        if psycopg is None:  # pragma: no cover
            return None
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return StoreConflict(str(exc).splitlines()[0])
        # before _problem: these are OperationalErrors too
        if isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure):
            return StoreContended(f"database {self.where}: transaction rolled back in a "
                                  f"conflict with another ({type(exc).__name__}); "
                                  "it can be run again")
        why = _problem(exc)
        if why is None:
            return None
        return StoreNotWritable(f"database {self.where} cannot be written ({why}); "
                                "check that PostgreSQL is running and has free disk "
                                "space - forms answer \"temporarily unavailable\" "
                                "until then")

    def migrate(self, conn: Connection, steps: Sequence[tuple[str, Migration]],
                forms: dict[str, str | Migration], now: Callable[[], str]) -> list[str]:
        """Each step in its PostgreSQL form (a script, or a function given the
        connection), else its SQLite form; instances starting at once take turns (an
        advisory lock), so each step runs once."""
        applied: list[str] = []
        self.lock("formrelay migrations")
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, "
                     "applied_at TEXT)")
        done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
        for name, step in steps:
            if name in done:
                continue
            form = forms.get(name, step)
            if isinstance(form, str):
                conn.executescript(form)
            else:
                form(conn)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                         (name, now()))
            applied.append(name)
        return applied

    def json_pairs(self) -> str:
        return "json_each_text(CAST(? AS json))"

    # -- ciphertexts: rows of CHUNK bytes in submission_chunks -------------------------
    def put_ciphertext(self, conn: Connection, insert: str, params: list[Any],
                       reference: str, source: IO[bytes], size: int) -> None:
        """The row and the file in rows of `CHUNK` bytes, whatever its size."""
        put_chunks(conn, insert, params, reference, source)

    def ciphertext(self, reference: str) -> Iterator[bytes]:
        return read_chunks(self.pg, reference)

    def drop_ciphertext(self, conn: Connection, reference: str) -> None:
        conn.execute("DELETE FROM submission_chunks WHERE reference = ?", (reference,))

    def backup(self, dest: Path) -> dict[str, int]:
        raise StoreError(f"formrelay backup copies the SQLite file; this deployment keeps "
                         f"its data in PostgreSQL ({self.where}): back it up with "
                         "pg_dump (e.g. pg_dump --format=custom --file=formrelay.dump "
                         "DBNAME), see the README's \"Backups\"")

    def truncate_wal(self) -> None:
        """PostgreSQL: its own WAL and vacuum; nothing to do here."""
