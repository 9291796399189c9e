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

from . import copy_mail  # noqa: F401 - registers the patient copy's mail kinds
from .config import Settings
from .copies import Copies, CopyStep, check_fonts
from .crypto import Keyring
from .inbox import Inbox
from .mail_kinds import mail_domain, queue_submission
from .notify import queue_notice
from .pipeline import Step
from .relay import Relay
from .store import Store, utcnow
from .users import Accounts


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

    def startup(self) -> None:
        """Import the configured keys (and log any refused), refuse to start when a form
        offers a copy but the PDF fonts are missing, and seal TOTP secrets an older
        version stored in clear."""
        self.relay.sync_keys()
        check_fonts(self.settings)
        self.accounts.seal_stored_secrets()

    def close(self) -> None:
        self.store.close()


def build(settings: Settings, clock: Callable[[], datetime] = utcnow, *,
          extra_steps: Sequence[Step[Any]] = ()) -> Services:
    """Open the data folder's database and keyring and wire the relay's pipeline.
    `extra_steps` run after the standard ones (tests use it)."""
    data = settings.data_dir
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = Store(data / "formrelay.db", clock)
    keyring = Keyring(data / "gnupg", timeout=settings.server.gpg_timeout_seconds)
    copies = Copies(settings, store, clock)
    relay = Relay(settings, store=store, keyring=keyring, clock=clock, steps=(
        queue_submission(store, settings, mail_domain(settings)),  # email delivery
        queue_notice(store, settings),  # hold delivery: the notice, no patient data
        CopyStep(copies),
        *extra_steps))
    accounts = Accounts(settings, store)
    return Services(settings, clock, store, keyring, relay, copies, accounts,
                    Inbox(settings, store, accounts))
