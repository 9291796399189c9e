"""A `limits` storage backend whose counters live in formrelay's database.

flask-limiter's default memory storage counts per process: under gunicorn with N
workers a client would get N times its limit. Redis or memcached would fix that but
adds a service a one-person practice must run. The database (the SQLite file, or
PostgreSQL) is already shared by every worker and instance, so the fixed-window counters
go there, through `Store` (the only module that touches the database). Each hit is one
short write transaction without fsync (losing a counter on power failure is harmless).

Registered as the storage scheme ``formrelay-db://``; the app passes its `Store` as the
``store`` option. Only the fixed-window strategy is supported (flask-limiter's default).
"""

from __future__ import annotations

from typing import Any

from limits.storage import Storage

from ..store import Store

SCHEME = "formrelay-db"


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
        return self.store.hit_counter(key, expiry, amount)

    def get(self, key: str) -> int:
        return self.store.counter(key)[0]

    def get_expiry(self, key: str) -> float:
        return self.store.counter(key)[1]

    def check(self) -> bool:
        try:
            self.store.counter("_check")
        except self.store.errors:
            return False
        return True

    def reset(self) -> int | None:
        return self.store.clear_counters()

    def clear(self, key: str) -> None:
        self.store.clear_counters(key)
