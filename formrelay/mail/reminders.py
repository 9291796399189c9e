"""Key-expiry reminders: the operator is mailed before a recipient's key expires.

30, 7 and 1 days before a recipient's OpenPGP key expires, and once it has, the
operator gets a plain mail naming the key, the forms that will refuse submissions and
how to import a renewed key. Each reminder is recorded (`key_reminders`) in the same
transaction that queues it, so it goes out once even with several workers running.
The worker (ops/worker.py, run_worker) checks once a day, `formrelay worker --once` too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from ..crypto.keyring import KeyStatus
from ..localtime import utc_shown
from ..settings import Settings
from ..store import Store
from .kinds import tell_operator

log = logging.getLogger("formrelay.delivery")  # as before the split: operators filter on it

REMINDER_DAYS = (30, 7, 1, 0)  # key-expiry mails to the operator; 0 = it has expired


def check_key_expiry(settings: Settings, store: Store, statuses: Mapping[str, KeyStatus],
                     now: datetime) -> list[str]:
    """Mail the operator 30, 7 and 1 days before a recipient key expires (and when it
    has expired), each reminder once; returns the recipient ids reminded now."""
    reminded = []
    for rid, st in statuses.items():
        if st.expires is None:
            continue
        left = (st.expires - now) / timedelta(days=1)
        due = [d for d in REMINDER_DAYS if left <= d]
        if not due:
            continue
        days = min(due)
        forms = [f.id for f in settings.forms.values() if rid in f.recipients]
        when = ("has EXPIRED" if days == 0 else "expires within a day" if left < 1
                else f"expires in {int(left)} days")
        subject = f"key of {rid} {when} ({st.expires:%Y-%m-%d})"
        body = (f"The OpenPGP key of recipient {rid} (fingerprint {st.fingerprint}) "
                f"{when}, on {utc_shown(st.expires)}.\n\n"
                f"From then on these forms refuse submissions: {', '.join(forms) or 'none'}.\n"
                f"Ask the clinician for a renewed key (or a new one, and update the "
                f"fingerprint in the config), then run `formrelay keys import {rid}`.\n")
        practice = settings.practice_of_recipient(rid)
        if not practice.operator_email:
            log.warning("%s; set operator_email to be mailed about it", subject)
            continue

        with store.transaction():  # the reminder's record and its mail, or neither
            first = store.outbox.first_key_reminder(st.fingerprint, f"{st.expires:%Y-%m-%d}",
                                                    days)
            if first:
                tell_operator(store, settings, subject, body, practice=practice)
        if first:
            log.warning("%s; operator mailed", subject)
            reminded.append(rid)
    return reminded
