"""The tables that say which features take part: kinds of mail, purge steps, checks.

The outbox worker builds only the kinds of mail in `mail_kinds()`, the retention purge
runs its own deletions and then the steps in `purgers()`, `formrelay check` runs the
checks in `checks()` in that order. They are plain values, assembled here and passed
as arguments to what uses them: nothing registers itself when imported, so what runs
does not depend on which modules happen to have been imported. A feature with its own
mail, data to purge or check adds it here.
"""

from __future__ import annotations

from datetime import datetime

from . import checks as preflight
from . import copy_mail, delivery, notify
from .checks import Check
from .config import Settings
from .copies import Copies
from .mail_kinds import OPERATOR_MAIL, SUBMISSION_MAIL, MailKinds, kind_table
from .retention import Purgers
from .store import Store


def mail_kinds() -> MailKinds:
    """Every kind of mail the outbox sends, by name."""
    return kind_table(SUBMISSION_MAIL, OPERATOR_MAIL, notify.MAIL, copy_mail.LINK_MAIL,
                      copy_mail.PGP_MAIL)


def _expired_copies(settings: Settings, store: Store, now: datetime) -> int:
    return Copies(settings, store, lambda: now).purge()


def purgers() -> Purgers:
    """The purge steps of other features, in order, with the name each reports under."""
    return (("sent and failed mail records removed", delivery.purge_done),
            ("patient copies", _expired_copies))


def checks() -> tuple[Check, ...]:
    """The checks of `formrelay check`, in the order their lines are printed."""
    return (preflight.config, preflight.database, preflight.keys, preflight.encryption,
            preflight.mail_relay, preflight.outbox, preflight.clock, preflight.audit_log)
