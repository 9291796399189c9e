"""A `limits` storage backend whose counters live in formrelay's database.

flask-limiter's default memory storage counts per process: under gunicorn with N
workers a client would get N times its limit. Redis or memcached would fix that but
adds a service a one-person practice must run. The database (the SQLite file, or
PostgreSQL) is already shared by every worker and instance, so the fixed-window counters
go there, through `Store` (the only module that touches the database). Each hit is one
short write transaction without fsync (losing a counter on power failure is harmless).

Registered as the storage scheme ``formrelay-db://``; the app passes its `Store` as the
``store`` option. Only the fixed-window strategy is supported (flask-limiter's default).

Several app instances on several machines share no database file of their own, so
``server.rate_limit_storage = "redis://…"`` puts the counters in Redis through `limits`'
own `RedisStorage` (the ``redis`` client is the optional extra ``formrelay[redis]``). A
Redis that does not answer stops start-up (`require_reachable`, called before gunicorn
starts its workers); one that goes away later fails closed, like a database that
refuses the counter's write: the post is refused with the 503 "call the practice" page
(`CountersDown`), never let through uncounted.
"""

from __future__ import annotations

from typing import Any

from limits.storage import Storage, storage_from_string

from ..config import redacted_url
from ..errors import OperatorError
from ..settings import REDIS_PASSWORD_ENV, Settings
from ..store import Store

SCHEME = "formrelay-db"
# A Redis that stops answering must not hold a patient's post (or a worker) for long.
REDIS_TIMEOUT_SECONDS = 2.0


class CountersDown(OperatorError):
    """The rate-limit counters cannot be read or written: posts are refused (503)."""


class DatabaseStorage(Storage):
    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options: Any):
        store = options.pop("store", None)
        if not isinstance(store, Store):
            raise ValueError(f"{SCHEME}:// needs the app's Store as the 'store' option")
        self.store = store
        super().__init__(uri, wrap_exceptions=wrap_exceptions)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return self.store.errors

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.store.protection.hit(key, expiry, amount)

    def get(self, key: str) -> int:
        return self.store.protection.counter(key)[0]

    def get_expiry(self, key: str) -> float:
        return self.store.protection.counter(key)[1]

    def check(self) -> bool:
        try:
            self.store.protection.counter("_check")
        except self.store.errors:
            return False
        return True

    def reset(self) -> int | None:
        return self.store.protection.clear_counters()

    def clear(self, key: str) -> None:
        self.store.protection.clear_counters(key)


# -- choosing and checking the storage ----------------------------------------------------
def storage_uri(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The `limits` storage URI and options for `settings` (flask-limiter's storage_uri
    and storage_options); `store` is added by the caller for the database storage."""
    uri = settings.server.rate_limit_storage
    if not uri:
        return f"{SCHEME}://", {}
    options: dict[str, Any] = {
        # a redis error becomes limits' StorageError, which web/protect.py answers with 503
        "wrap_exceptions": True,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
    }
    if settings.redis_password:
        options["password"] = settings.redis_password
    return uri, options


def describe(settings: Settings) -> str:
    uri = settings.server.rate_limit_storage
    return f"Redis at {redacted_url(uri)}" if uri else "the database file"


def problem(storage: Storage) -> str:
    """Why `storage` cannot count right now, or "" when it answers."""
    if isinstance(storage, DatabaseStorage):
        return "" if storage.check() else "the database does not answer"
    get_connection = getattr(storage, "get_connection", None)
    if get_connection is None:
        return "" if storage.check() else "it does not answer"
    try:
        get_connection().ping()
    except Exception as exc:  # noqa: BLE001 - any client error is the answer
        return f"{type(exc).__name__}: {exc}"
    return ""


def open_storage(settings: Settings, store: Store | None = None) -> Storage:
    """The configured storage, as `formrelay check` and `serve` open it (the database's
    needs the `store`)."""
    uri, options = storage_uri(settings)
    if not settings.server.rate_limit_storage:
        options["store"] = store
    storage = storage_from_string(uri, **options)
    assert isinstance(storage, Storage)  # noqa: S101 - redis:// and ours are synchronous
    return storage


def require_reachable(settings: Settings, storage: Storage) -> None:
    """Refuse to start when the counters cannot be reached (a clear, one-line error)."""
    why = problem(storage)
    if why:
        raise CountersDown(unreachable(settings, why))


def unreachable(settings: Settings, why: str) -> str:
    return (f"server.rate_limit_storage: {describe(settings)} does not answer ({why}); "
            "posts are refused (503) until it does: start Redis, or fix the URL or "
            f"{REDIS_PASSWORD_ENV}")
