"""The worker loop of `formrelay worker` (and the demo's background thread): each pass
delivers the outbox's mail (mail/outbox.py), runs the periodic retention jobs
(retention.py: held notices, the hourly purge) and, once a day, the key-expiry check
(mail/reminders.py). It lives here, above both, so the mail package never runs ops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from ..crypto.keyring import KeyStatus
from ..logs import log_exception
from ..mail.kinds import MailKinds
from ..mail.outbox import deliver_pending, worker_id
from ..mail.reminders import check_key_expiry
from ..settings import Settings
from ..store import Store
from . import retention

log = logging.getLogger("formrelay.delivery")

KEY_CHECK_SECONDS = 24 * 3600


def run_worker(settings: Settings, store: Store, *, kinds: MailKinds,
               purgers: retention.Purgers, stop: threading.Event | None = None,
               interval: float = 2.0,
               key_status: Callable[[], Mapping[str, KeyStatus]] | None = None,
               settings_now: Callable[[], Settings] | None = None) -> None:
    """Deliver the mail of `kinds` until `stop` is set (a send in progress finishes
    first), purging with `purgers` too; check the keys' expiry once a day if
    `key_status` is given. `settings_now` gives the settings in force at each pass (a
    reloaded configuration, reload.py)."""
    stop = stop or threading.Event()
    owner = worker_id()
    next_key_check = 0.0
    log.info("delivery worker %s started", owner)
    while not stop.is_set():
        try:
            if settings_now is not None:
                settings = settings_now()
            deliver_pending(settings, store, kinds=kinds, owner=owner, stop=stop)
            retention.periodic(settings, store, purgers=purgers)  # notices; hourly purge
            if key_status is not None and time.monotonic() >= next_key_check:
                check_key_expiry(settings, store, key_status(), store.clock())
                next_key_check = time.monotonic() + KEY_CHECK_SECONDS
        except Exception as exc:  # keep delivering; the next pass tries again
            log_exception(log, "delivery pass failed; trying again in %.0f s", interval,
                          exc=exc)
        stop.wait(interval)
    log.info("delivery worker %s stopped", owner)


def start_background(settings: Settings, store: Store, *, kinds: MailKinds,
                     purgers: retention.Purgers, interval: float = 1.0,
                     key_status: Callable[[], Mapping[str, KeyStatus]] | None = None,
                     ) -> tuple[threading.Thread, threading.Event]:
    """Run the worker in a daemon thread of this process (the demo); set the returned
    event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, name="formrelay-delivery", daemon=True,
                              args=(settings, store),
                              kwargs={"kinds": kinds, "purgers": purgers, "stop": stop,
                                      "interval": interval,
                                      "key_status": key_status})
    thread.start()
    return thread, stop

