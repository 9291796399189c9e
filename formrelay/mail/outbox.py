"""The outbox worker: every mail formrelay sends leaves through the outbox, from here.

Queueing is durable: a mail is a row in the `outbox` table, committed in the same
transaction as what caused it (a submission, a held notice...). Delivery happens later,
in `formrelay worker` (or the demo's background thread), never in a web request.
Delivery is at-least-once: a process claims a row with a lease (so two processes never
send it at the same time), sends it, and marks it sent; a process killed mid-send
leaves the lease to expire and the next claim sends it again with the same Message-ID.
Temporary failures back off exponentially (``smtp.retry_seconds`` doubling up to
``smtp.retry_max_minutes``, for ``smtp.give_up_days``); a permanent 5xx refusal of one
mail (at RCPT TO or after DATA) marks it failed at once, is audited and mailed to the
operator, and `formrelay outbox --retry` (or `--retry-failed`) queues it again. A relay
that refuses formrelay itself (5xx at MAIL FROM, 530 authentication required) is
misconfigured, not the mail: every mail waits with backoff and without giving up, the
operator is told once, and all go once the relay is fixed. A mail that can never be
built (BuildError, e.g. an address that cannot be put in a header) fails at once.
After the relay accepted a mail its payload and recipients' addresses are deleted; the
records of sent and failed mails go when their form's retention has passed (a purge
step). The kinds of mail and how a feature queues its own are in kinds.py; the worker
builds only the kinds in the table it is given (`services.mail_kinds()`). Key-expiry
reminders are in reminders.py; the loop that runs delivery with the periodic jobs is
ops/worker.py.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.errors import MessageError

from ..audit_actions import AuditAction
from ..intake.addresses import header_problem
from ..localtime import utc_shown
from ..logs import log_exception
from ..settings import DEFAULT_RETENTION_DAYS, Settings
from ..store import OutboxMail, Store
from .kinds import (
    OPERATOR,
    SUBMISSION,
    BuildError,
    MailKind,
    MailKinds,
    PracticeGone,
    open_recipients,
    recorded,
    tell_operator,
)
from .transport import (
    FileSink,
    MailError,
    Message,
    Rejected,
    RelayRefused,
    SmtpSession,
    TransportError,
    message_size,
    open_transport,
    transport_configured,
)

log = logging.getLogger("formrelay.delivery")

BATCH = 20  # mails claimed per transaction
MARK_AFTER_SECONDS = 0.5  # longest a sent mail waits to be recorded as sent
LARGE_MESSAGE = 1 << 20  # before sending one this large, record what was sent before


# -- one delivery pass -------------------------------------------------------------------
@dataclass
class PassResult:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.sent + self.deferred + self.failed


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def backoff(attempts: int, settings: Settings) -> timedelta:
    """Wait before the next try: retry_seconds, doubling, at most retry_max_minutes."""
    s = settings.smtp
    seconds = s.retry_seconds * 2 ** min(max(attempts - 1, 0), 30)
    return timedelta(seconds=min(seconds, s.retry_max_minutes * 60))


def _sink_name(mail: OutboxMail) -> str:
    if mail.kind == SUBMISSION:
        return mail.reference
    return f"{mail.reference or 'mail'}-{mail.kind}-{mail.id}"


def deliver_pending(settings: Settings, store: Store, *, kinds: MailKinds,
                    owner: str | None = None, stop: threading.Event | None = None,
                    limit: int | None = None) -> PassResult:
    """Send every due mail once (one pass), building each with its kind from `kinds`;
    returns what happened. Safe to run in any number of processes at once: each mail
    is leased to one sender."""
    result = PassResult()
    if not transport_configured(settings):
        return result
    run = _Pass(settings, store, kinds, owner or worker_id(), result)
    try:
        run.finish_accepted()
        while not (stop and stop.is_set()) and (limit is None or result.handled < limit):
            want = BATCH if limit is None else min(BATCH, limit - result.handled)
            batch = store.outbox.claim(run.owner, settings.smtp.lease_seconds, want)
            if not batch:
                break
            for mail in batch:
                if run.broken:  # the relay failed on an earlier mail of this batch
                    run.defer(mail, run.broken)
                else:
                    run.attempt(mail)
            run.flush()
            if run.broken:
                break  # the relay is unusable now; the other mails wait their turn
    finally:
        run.close()
    return result


class _Pass:
    """One delivery pass: sends claimed mails over one connection and records the
    outcomes in few transactions (a write lock taken per mail starves behind busy
    intake). A sent mail is recorded within MARK_AFTER_SECONDS, and before any large
    send, so a crash re-sends little."""

    def __init__(self, settings: Settings, store: Store, kinds: MailKinds, owner: str,
                 result: PassResult):
        self.settings, self.store, self.owner, self.result = settings, store, owner, result
        self.kinds = kinds
        self.transport: FileSink | SmtpSession | None = None
        self.broken: TransportError | None = None
        self._pending: list[Callable[[], None]] = []
        self._accepted: list[tuple[int, str]] = []  # (outbox id, where) not yet recorded
        self._since = 0.0

    def finish_accepted(self) -> None:
        """Mark sent the mails the relay accepted but whose bookkeeping was lost (a pass
        that failed after the send): never send those again."""
        lease = self.settings.smtp.lease_seconds
        while found := self.store.outbox.claim_accepted(self.owner, lease, BATCH):
            for mail, where in found:
                log.warning("mail #%d (%s %s) was accepted by %s before; recording it as "
                            "sent, not sending it again", mail.id, mail.kind, mail.reference,
                            where)
                self._later(functools.partial(_mark_sent, self.settings, self.store, mail,
                                              self.kinds.get(mail.kind), {}, where))
            self.flush()

    def attempt(self, mail: OutboxMail) -> None:
        kind = self.kinds.get(mail.kind)
        if kind is None:
            self.defer(mail, MailError("unknown mail kind",
                                       f"{mail.kind}: add it to services.mail_kinds"))
            return
        try:
            mail = open_recipients(mail, self.settings)  # sealed patient addresses
            sender = recorded(mail, self.settings).sender  # whose it was when queued
            message = _build(kind, mail, self.settings, self.store)
            if message_size(message) > LARGE_MESSAGE:
                self.flush()
            self.transport = self.transport or open_transport(self.settings)
            refused = self.transport.send(
                sender, mail.recipients, message,
                name=_sink_name(mail), keepalive=functools.partial(
                    self.store.outbox.renew_leases, self.owner, self.settings.smtp.lease_seconds))
        except PracticeGone as exc:
            if mail.error_class != exc.error_class:  # told once, not at every retry
                self.alert_practice_gone(mail)
            self.defer(mail, exc)
        except BuildError as exc:
            self.fail(mail, kind, str(exc), str(exc))
        except Rejected as exc:
            if exc.permanent:
                self.fail(mail, kind, exc.error_class, str(exc))
            else:
                self.defer(mail, exc)
        except TransportError as exc:
            self.broken = exc
            if isinstance(exc, RelayRefused):
                self.alert_relay(exc)
            self.defer(mail, exc)
        except Exception as exc:  # a bug or a database hiccup: try again later
            # no message: it could quote a patient's address
            log_exception(log, "mail #%d (%s %s) could not be sent", mail.id, mail.kind,
                          mail.reference, exc=exc)
            self._close_transport()  # it may be mid-transaction
            self.defer(mail, MailError("internal error", type(exc).__name__))
        else:
            where = self.transport.describe()
            self.result.sent += 1
            self._accepted.append((mail.id, where))
            self._later(functools.partial(_mark_sent, self.settings, self.store, mail, kind,
                                          refused, where))

    def alert_relay(self, exc: RelayRefused) -> None:
        """The relay refuses every mail: say so loudly, and queue one operator notice
        (not one per mail; it waits in the queue with the rest until the relay is fixed)."""
        log.error("the mail relay refuses formrelay's mail: %s. Every mail stays queued and "
                  "none is marked failed; fix the relay or [smtp], and the worker delivers "
                  "them all. `formrelay check` and /healthz show the waiting outbox.", exc)
        def notice() -> None:  # every practice's mail waits: the instance's operator
            tell_operator(self.store, self.settings, "the mail relay refuses formrelay's mail",
                          _relay_text(exc), once="relay-refused", everyone=True)

        self._later(notice)

    def alert_practice_gone(self, mail: OutboxMail) -> None:
        """A mail of a practice no longer configured (queued before mail recorded whose
        it is) waits: never sent in another practice's name. The instance's operator is
        told when it starts waiting."""
        log.error("mail #%d (%s %s) of practice %s waits: that practice is no longer "
                  "configured", mail.id, mail.kind, mail.reference, mail.practice)

        def notice() -> None:
            tell_operator(self.store, self.settings,
                          f"mail of removed practice {mail.practice} waits",
                          _gone_text(mail.practice), once=f"practice-gone-{mail.practice}",
                          everyone=True)

        self._later(notice)

    def defer(self, mail: OutboxMail, exc: MailError) -> None:
        s, now = self.settings.smtp, self.store.clock()
        # a relay refusing us, or a practice gone, says nothing about the mail: wait
        # for the fix, however long
        if not isinstance(exc, RelayRefused | PracticeGone) \
                and now - mail.created_at >= timedelta(days=s.give_up_days):
            gave_up = f"gave up after {s.give_up_days} days"
            self.fail(mail, self.kinds.get(mail.kind), f"{gave_up}: {exc.error_class}",
                      f"{gave_up}; last error: {exc}")
            return
        next_at = now + backoff(mail.attempts, self.settings)
        self.result.deferred += 1
        self.result.errors.append(exc.error_class)
        level = logging.ERROR if isinstance(exc, TransportError) else logging.WARNING
        log.log(level, "mail #%d (%s %s) not sent, stays queued: %s; next try %s", mail.id,
                mail.kind, mail.reference, exc, utc_shown(next_at, seconds=True))
        self._later(functools.partial(self.store.outbox.deferred, mail, self.owner, next_at,
                                      exc.error_class, str(exc)))

    def fail(self, mail: OutboxMail, kind: MailKind | None, error_class: str,
             detail: str) -> None:
        self.result.failed += 1
        self.result.errors.append(error_class)
        log.error("mail #%d (%s %s) FAILED, not retried: %s; see `formrelay outbox`", mail.id,
                  mail.kind, mail.reference, detail)
        self._later(functools.partial(_mark_failed, self.settings, self.store, mail, kind,
                                      error_class, detail))

    def _later(self, step: Callable[[], None]) -> None:
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append(step)
        if time.monotonic() - self._since >= MARK_AFTER_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Record what this pass did. First, alone, that the relay accepted the sent
        mails: nothing that rolls the bookkeeping back (a deadlock, a lost connection)
        can then make a later claim send them again (issue 16.5). Then the bookkeeping
        (statuses, audit, the kinds' hooks) in one transaction, run again if PostgreSQL
        gives it up in a conflict with another."""
        self.store.outbox.accepted(self.owner, self._accepted)
        self._accepted.clear()
        if self._pending:
            def record() -> None:
                with self.store.transaction():
                    for step in self._pending:
                        step()

            self.store.retried(record)
            self._pending.clear()

    def _close_transport(self) -> None:
        if self.transport:
            self.transport.close()
            self.transport = None

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._close_transport()


def _build(kind: MailKind, mail: OutboxMail, settings: Settings, store: Store) -> Message:
    """The kind's message; BuildError if it can never be built, so the mail fails now
    instead of being retried for days (the reason never quotes an address)."""
    for n, address in enumerate(mail.recipients, start=1):
        problem = header_problem(address)
        if problem:
            raise BuildError(f"recipient address {n} of {len(mail.recipients)} {problem}; "
                             "it cannot be sent to")
    try:
        return kind.build(mail, settings, store)
    except (ValueError, UnicodeError, MessageError) as exc:  # the email package's refusals
        raise BuildError(f"mail cannot be built ({type(exc).__name__} from the email "
                         "package)") from None


def _mark_sent(settings: Settings, store: Store, mail: OutboxMail, kind: MailKind | None,
               refused: dict[str, str], where: str) -> None:
    detail = f"accepted by {where}"
    if refused:
        detail += f"; refused for {len(refused)} of {len(mail.recipients)} recipients"

    with store.transaction():  # the mail's row, its audit and the kind's bookkeeping
        store.outbox.done(mail, "sent", detail)
        if kind and kind.on_sent:
            kind.on_sent(mail, store)
        if refused:
            reasons = "; ".join(sorted(set(refused.values())))
            store.audit.append(AuditAction.FAILED, "failed", reference=mail.reference,
                               form_id=mail.form_id, practice=mail.practice or None,
                               detail=f"{mail.kind} mail refused for {len(refused)} recipient(s): "
                                      f"{reasons}")
            if mail.kind != OPERATOR:
                tell_operator(store, settings, f"mail {mail.reference} not delivered to "
                              f"{len(refused)} recipient(s)",
                              _failure_text(mail, reasons, partial=True),
                              reference=mail.reference, form_id=mail.form_id, about=mail)

    log.info("mail #%d (%s %s) %s, attempt %d", mail.id, mail.kind, mail.reference, detail,
             mail.attempts)


def _mark_failed(settings: Settings, store: Store, mail: OutboxMail, kind: MailKind | None,
                 error_class: str, detail: str) -> None:
    with store.transaction():  # the mail's row, its audit and the kind's bookkeeping
        store.outbox.done(mail, "failed", detail, error_class=error_class)
        if kind and kind.on_failed:
            kind.on_failed(mail, store)
        if mail.kind != OPERATOR:
            tell_operator(store, settings, f"mail {mail.reference or mail.id} failed",
                          _failure_text(mail, detail), reference=mail.reference,
                          form_id=mail.form_id, about=mail)


def _failure_text(mail: OutboxMail, reason: str, partial: bool = False) -> str:
    what = f"The {mail.kind} mail #{mail.id}" + (f" for reference {mail.reference}"
                                                  if mail.reference else "")
    lines = [f"{what} (form {mail.form_id or '-'}) was "
             + ("not delivered to every recipient." if partial else "not delivered."),
             f"Reason: {reason}", ""]
    if mail.kind == SUBMISSION:
        lines += ["The encrypted submission is still stored." if not partial else
                  "The other recipients received it.",
                  f"Check the recipient addresses, then run `formrelay outbox --retry "
                  f"{mail.reference}`, or fetch it with `formrelay ciphertext "
                  f"{mail.reference}`."]
    else:
        lines.append("Run `formrelay outbox` for details.")
    return "\n".join(lines) + "\n"


def _relay_text(exc: RelayRefused) -> str:
    return "\n".join([
        "The mail relay refused formrelay's mail, whatever the message or recipient:",
        f"    {exc}",
        "",
        "No mail was marked failed: all of them (this one too) wait in the outbox and are",
        "retried with backoff. If you are reading this, the relay accepts mail again and the",
        "queue is being delivered.",
        "",
        "If mail still waits: check the relay's settings for formrelay (is this sender",
        "allowed, is a login needed?) and [smtp] username, from_address and the",
        "FORMRELAY_SMTP_PASSWORD environment variable; then see `formrelay outbox` and",
        "`formrelay check`.",
    ]) + "\n"


def _gone_text(practice: str) -> str:
    return "\n".join([
        f"Mail of practice {practice} waits in the outbox: it was queued before formrelay",
        "recorded with each mail whose it is, and that practice is no longer configured.",
        "It is not sent in another practice's name.",
        "",
        f"Put the practice {practice} back (its [practices.{practice}] or its file in",
        "practices_dir) and the mail goes out; see `formrelay outbox`.",
    ]) + "\n"


def retry(store: Store, ident: str | None) -> list[OutboxMail]:
    """Queue failed mails again, due now: by outbox id or reference, or (None) all."""
    with store.transaction():
        mails = store.outbox.retry(ident)
        for mail in mails:
            if mail.kind == SUBMISSION:
                store.submissions.set_status(mail.reference, "queued")
    return mails


# -- retention of sent and failed mail records --------------------------------------------
def purge_done(settings: Settings, store: Store, now: datetime) -> int:
    """Delete the records of mails sent or failed longer ago than their form's
    `retention_days` (mail of no configured form: the default); each is audited."""
    cutoffs = {form_id: now - timedelta(days=spec.retention_days)
               for form_id, spec in settings.forms.items()}
    return len(store.outbox.purge(cutoffs, now - timedelta(days=DEFAULT_RETENTION_DAYS)))
