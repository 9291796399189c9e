"""Password hashes that neither stall a worker nor let a flood of logins take it over.

An argon2id hash (64 MiB, t=3) takes a good part of a CPU for a tenth of a second or
more. Under gunicorn's gevent worker, a hash computed in the request's greenlet stops
every other connection of that process for as long: 32 parallel bad logins made a
patient's form page wait 42 s (issue 16.6). So a hash runs in gevent's thread pool
(argon2-cffi releases the GIL; the event loop keeps answering), and at most HASH_SLOTS
run at once per process: a login that finds no slot free within HASH_WAIT_SECONDS is
refused (`Busy`, answered 429) before any hashing. Without gevent (the CLI, tests, a
threaded server) the hash runs in the calling thread, under the same slots.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

HASH_SLOTS = 1  # hashes at once per process: a 2-core machine runs two workers
HASH_WAIT_SECONDS = 2.0  # a login waits this long for a slot, then is refused (429)
HASH_NICENESS = 10  # a hashing thread's CPU priority below the event loop's


class Busy(Exception):
    """Every hashing slot of this process stayed taken for HASH_WAIT_SECONDS. Internal
    (outside the errors.py tree): accounts.py turns it into the login's 429 "busy" at
    once, so it never reaches a view."""


@functools.cache
def _slots() -> threading.BoundedSemaphore:
    # made at first use, not at import: `formrelay serve` imports this module before the
    # gevent worker patches threading, and an unpatched semaphore would block the loop
    return threading.BoundedSemaphore(HASH_SLOTS)


def _green() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


@contextmanager
def slot() -> Iterator[None]:
    """Hold one of this process's hashing slots; `Busy` if none frees up in time."""
    slots = _slots()
    if not slots.acquire(timeout=HASH_WAIT_SECONDS):
        raise Busy(f"{HASH_SLOTS} password hashes running for {HASH_WAIT_SECONDS:g} s")
    try:
        yield
    finally:
        slots.release()


def run(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` off the event loop when there is one (gevent's thread pool), else
    here; its exception (a wrong password) is raised here."""
    if _green():
        import gevent

        return gevent.get_hub().threadpool.apply(_background, (fn, *args))
    return fn(*args)


_niced = threading.local()


def _background(fn: Callable[..., T], *args: object) -> T:
    """In a thread of gevent's pool: lower this thread's CPU priority once (Linux nices
    threads one by one), so the event loop's own thread, serving pages, wins the CPU
    over hashes on a busy machine."""
    if not getattr(_niced, "done", False):
        _niced.done = True
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)
        except (OSError, AttributeError):
            pass  # not Linux, or not allowed: hashes keep the normal priority
    return fn(*args)
