"""The composition root: everything the app needs, built once from the settings.

The web app, the CLI (worker included), the demo, `formrelay check`, the tests and the
benchmarks all get their store, keyring, relay, patient copies, clinician accounts and
inbox from `build()`. So there is one way to get a relay, and it always runs every step
of the pipeline: the submission's mail, the held notice, the patient's copy (in that
order, each in the submission's transaction). `Services.startup()` is what a serving
process does once before taking requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .clinician import invitations
from .clinician.accounts import Accounts
from .clinician.inbox import Inbox
from .clinician.invitations import Invitations
from .clinician.reader_keys import ReaderKeys
from .crypto.keyring import Keyring
from .intake.pipeline import Step
from .intake.relay import Relay
from .localtime import utcnow
from .mail import notify, outbox
from .mail.kinds import OPERATOR_MAIL, SUBMISSION_MAIL, MailKinds, SubmissionMail, kind_table
from .mail.notify import HeldNotice
from .ops import checks as preflight
from .ops.checks import Check
from .ops.retention import Purgers
from .patient_copy import link_mail, pgp_copy
from .patient_copy.copies import Copies
from .patient_copy.step import CopyStep, check_fonts
from .replies import answers as reply_answers
from .replies.step import ReplyStep
from .settings import DEFAULT_PRACTICE, DEFAULT_RETENTION_DAYS, Settings
from .store import Store
from .uploads import held as upload_held
from .uploads import links as upload_links


# -- the tables: which features take part ----------------------------------------------
# Plain values passed to what uses them: nothing registers itself when imported, so
# what runs does not depend on which modules happen to have been imported. A feature
# with its own mail, data to purge or check adds it here.
def mail_kinds() -> MailKinds:
    """Every kind of mail the outbox worker builds, by name."""
    return kind_table(SUBMISSION_MAIL, OPERATOR_MAIL, notify.MAIL, link_mail.LINK_MAIL,
                      pgp_copy.PGP_MAIL, upload_links.LINK_MAIL,
                      upload_links.NOTICE_MAIL, reply_answers.NOTICE_MAIL, invitations.MAIL)


def _expired_copies(settings: Settings, store: Store, now: datetime) -> int:
    return Copies(settings, store, lambda: now).purge()


def _expired_upload_links(settings: Settings, store: Store, now: datetime) -> int:
    return upload_links.UploadLinks(settings, store, lambda: now).expire()


def purgers() -> Purgers:
    """The retention purge's steps of other features, in order, with the name each
    reports under (ops/retention.py deletes held submissions and old audit rows itself)."""
    return (("sent and failed mail records removed", outbox.purge_done),
            ("patient copies", _expired_copies),
            ("upload links expired", _expired_upload_links),
            ("uploaded documents", upload_held.purge),
            ("answers to patients expired", reply_answers.purge))


def checks() -> tuple[Check, ...]:
    """The checks of `formrelay check`, in the order their lines are printed."""
    return (preflight.config, preflight.database, preflight.rate_limits, preflight.keys,
            preflight.encryption, preflight.mail_relay, preflight.outbox, preflight.clock,
            preflight.audit_log)


@dataclass(frozen=True)
class Services:
    settings: Settings
    clock: Callable[[], datetime]
    store: Store
    keyring: Keyring
    relay: Relay
    copies: Copies
    accounts: Accounts
    inbox: Inbox
    kinds: MailKinds
    purgers: Purgers
    invitations: Invitations
    reader_keys: ReaderKeys
    extra_steps: tuple[Step[Any], ...] = ()

    def startup(self) -> None:
        """Import the configured keys (and log any refused), refuse to start when a form
        offers a copy but the PDF fonts are missing, and seal TOTP secrets an older
        version stored in clear."""
        self.relay.sync_keys()
        check_fonts(self.settings)
        self.accounts.seal_stored_secrets()

    def reload_startup(self) -> None:
        """What a reloaded configuration needs before it serves (reload.py): the keys of
        new recipients imported, the PDF fonts there if a form now offers a copy."""
        self.relay.sync_keys()
        check_fonts(self.settings)

    def close(self) -> None:
        self.store.close()


def form_owner(settings: Settings) -> Callable[[str], tuple[str, list[str], list[str], int]]:
    """Who a form's submissions belong to under `settings`: its practice, recipient ids,
    their fingerprints and its retention days (for rows stored before these were
    recorded with each submission; a form no longer configured: the default practice)."""
    def owner(form_id: str) -> tuple[str, list[str], list[str], int]:
        spec = settings.form(form_id)
        if spec is None:
            return DEFAULT_PRACTICE, [], [], DEFAULT_RETENTION_DAYS
        return (spec.practice, list(spec.recipients), settings.recipient_fingerprints(spec),
                spec.retention_days)

    return owner


def build(settings: Settings, clock: Callable[[], datetime] = utcnow, *,
          extra_steps: Sequence[Step[Any]] = (), store: Store | None = None,
          keyring: Keyring | None = None) -> Services:
    """Open the data folder's database and keyring and wire the relay's pipeline.
    `extra_steps` run after the standard ones (tests use it). A reload (reload.py)
    passes the open `store` and `keyring` on to the new settings."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if store is None:  # a reload passes the open store on
        store = Store(settings.db_path, clock, url=settings.server.database_url)
        store.submissions.fill_ownership(form_owner(settings))  # rows older than the record: once
    keyring = keyring or Keyring(settings.gnupg_home,
                                 timeout=settings.server.gpg_timeout_seconds)
    copies = Copies(settings, store, clock)
    relay = Relay(settings, store=store, keyring=keyring, clock=clock, steps=(
        SubmissionMail(store, settings),  # email delivery: the PGP/MIME mail
        HeldNotice(store, settings),  # hold delivery: the notice, no patient data
        # the reply code before the copy: the copy's PDF prints it
        ReplyStep(reply_answers.Answers(settings, store, clock)),
        CopyStep(copies),
        *extra_steps))
    accounts = Accounts(settings, store)
    return Services(settings, clock, store, keyring, relay, copies, accounts,
                    Inbox(settings, store, accounts), mail_kinds(), purgers(),
                    Invitations(settings, store, accounts),
                    ReaderKeys(settings, store, keyring, relay), tuple(extra_steps))


__all__ = [
    "Services",
    "build",
    "checks",
    "form_owner",
    "mail_kinds",
    "purgers",
]
