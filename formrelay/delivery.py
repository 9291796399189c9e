"""The outbox worker: every mail formrelay sends leaves through the outbox, from here.

Queueing is durable: a mail is a row in the `outbox` table, committed in the same
transaction as what caused it (a submission, a held notice...). Delivery happens later,
in `formrelay worker` (or the demo's background thread), never in a web request.
Delivery is at-least-once: a process claims a row with a lease (so two processes never
send it at the same time), sends it, and marks it sent; a process killed mid-send
leaves the lease to expire and the next claim sends it again with the same Message-ID.
Temporary failures back off exponentially (``smtp.retry_seconds`` doubling up to
``smtp.retry_max_minutes``, for ``smtp.give_up_days``); a permanent 5xx refusal marks the
mail failed at once, is audited and mailed to the operator, and `formrelay outbox
--retry` queues it again. After the relay accepted a mail its payload is deleted.

How other features queue their own mail (the interface; keep it stable):

1. Register a kind once, at import time of your module::

       from formrelay import delivery
       def build(mail: OutboxMail, settings: Settings, store: Store) -> bytes: ...
       delivery.register_kind("notification", build, on_sent=None, on_failed=None)

   `build` returns the complete RFC 5322 message as bytes (or a `mime.Streamed` for
   something large). It is called at every attempt, in the worker process, with the
   claimed `store.OutboxMail` (id, kind, reference, form_id, recipients, payload,
   message_id, created_at, attempts). `delivery.plain_message(mail, settings, subject,
   body)` makes a correct plain-text mail (From, To, Date, fixed Message-ID). Raise
   `delivery.BuildError("short reason")` if the mail can never be built (it is then
   marked failed); any other exception defers it. `on_sent(mail, store)` and
   `on_failed(mail, store)` run inside the transaction that marks the row. The module
   that registers the kind must be imported by the worker: add it to `KIND_MODULES`.

2. Queue a mail, inside your own transaction if you have one::

       store.enqueue("notification", reference, ["dr@praktijk.nl"], payload=b"...",
                     form_id=form_id)

   `payload` is an opaque blob only your builder reads (encrypt it yourself if it is
   secret: it sits in the database until sent, then it is deleted). Never put patient
   data in any mail. Check `mailer.transport_configured(settings)` first: without a
   relay or sink folder nothing can be sent and the mail would wait forever.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from . import mime, retention
from .config import FormSpec, Settings
from .crypto import KeyStatus
from .i18n import gettext
from .mailer import (
    FileSink,
    MailError,
    Message,
    Rejected,
    SmtpSession,
    TransportError,
    message_size,
    open_transport,
)
from .mailer import transport_configured as transport_configured
from .store import OutboxMail, Store
from .submission import Submission

log = logging.getLogger("formrelay.delivery")

Builder = Callable[[OutboxMail, Settings, Store], Message]
Hook = Callable[[OutboxMail, Store], None]

SUBMISSION, OPERATOR = "submission", "operator"
# Modules that register mail kinds; the worker imports them so it can build their mail.
KIND_MODULES: list[str] = ["formrelay.notify", "formrelay.copy_mail"]
REMINDER_DAYS = (30, 7, 1, 0)  # key-expiry mails to the operator; 0 = it has expired
KEY_CHECK_SECONDS = 24 * 3600
BATCH = 20  # mails claimed per transaction
MARK_AFTER_SECONDS = 0.5  # longest a sent mail waits to be recorded as sent
LARGE_MESSAGE = 1 << 20  # before sending one this large, record what was sent before


class BuildError(Exception):
    """A builder cannot ever make this mail (e.g. its ciphertext is gone)."""


@dataclass(frozen=True)
class Kind:
    build: Builder
    on_sent: Hook | None = None
    on_failed: Hook | None = None


KINDS: dict[str, Kind] = {}


def register_kind(kind: str, builder: Builder, *, on_sent: Hook | None = None,
                  on_failed: Hook | None = None) -> None:
    """Teach the worker to build mails of `kind` (see the module docstring)."""
    KINDS[kind] = Kind(builder, on_sent, on_failed)


# -- helpers for builders ----------------------------------------------------------------
def mail_domain(settings: Settings) -> str:
    return urlsplit(settings.server.base_url).hostname or "formrelay.invalid"


def message_id(mail: OutboxMail, settings: Settings) -> str:
    """The mail's fixed Message-ID: every attempt sends the same one."""
    if mail.message_id.startswith("<"):
        return mail.message_id
    return f"<{mail.message_id}@{mail_domain(settings)}>"


def plain_message(mail: OutboxMail, settings: Settings, subject: str, body: str) -> bytes:
    """A plain-text UTF-8 mail from the practice's address to the mail's recipients."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = settings.smtp.from_address
    msg["To"] = ", ".join(mail.recipients)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(mail.created_at)
    msg["Message-ID"] = message_id(mail, settings)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()


# -- the submission's PGP/MIME mail ------------------------------------------------------
def queue_submission(store: Store, settings: Settings, domain: str) -> Callable[..., None]:
    """The `Relay.on_store` step that queues an email-delivery submission's mail in the
    submission's own transaction (the effective delivery is in extras["delivery"])."""

    def step(conn: sqlite3.Connection, sub: Submission, spec: FormSpec,
             extras: dict[str, Any]) -> None:
        if extras.get("delivery", spec.delivery) != "email":
            return
        emails = [settings.recipients[r].email for r in spec.recipients]
        store.enqueue(SUBMISSION, sub.reference, emails, form_id=spec.id,
                      message_id=mime.message_id(sub.reference, domain))

    return step


def _build_submission(mail: OutboxMail, settings: Settings, store: Store) -> Message:
    row = store.submission(mail.reference)
    if row is None or row["deleted_at"] or not row["size"]:
        raise BuildError("ciphertext no longer stored")
    spec = settings.form(mail.form_id)
    subject = gettext(spec.lang if spec else "nl", "Encrypted form submission %(reference)s",
                      reference=mail.reference)
    return mime.encrypted_message(
        sender=settings.smtp.from_address, recipients=mail.recipients, subject=subject,
        date=mail.created_at, message_id=message_id(mail, settings),
        ciphertext=lambda dest: store.copy_ciphertext(mail.reference, dest),
        ciphertext_size=row["size"])


def _submission_sent(mail: OutboxMail, store: Store) -> None:
    store.set_status(mail.reference, "sent", drop_ciphertext=True)
    store.audit("deleted", reference=mail.reference, form_id=mail.form_id,
                detail="ciphertext deleted after the relay accepted the mail")


def _submission_failed(mail: OutboxMail, store: Store) -> None:
    store.set_status(mail.reference, "failed")


register_kind(SUBMISSION, _build_submission, on_sent=_submission_sent,
              on_failed=_submission_failed)


# -- mail to the operator (plain, never patient data) ------------------------------------
def tell_operator(store: Store, settings: Settings, subject: str, body: str, *,
                  reference: str = "", form_id: str = "") -> bool:
    """Queue a plain mail to `server.operator_email`; False if none is configured."""
    to = settings.server.operator_email
    if not to or not transport_configured(settings):
        log.warning("no operator mail sent (set server.operator_email and [smtp]): %s", subject)
        return False
    payload = json.dumps({"subject": subject, "body": body}).encode()
    store.enqueue(OPERATOR, reference, [to], payload=payload, form_id=form_id)
    return True


def _build_operator(mail: OutboxMail, settings: Settings, store: Store) -> Message:
    data = json.loads(mail.payload)
    return plain_message(mail, settings, f"[formrelay] {data['subject']}", data["body"])


register_kind(OPERATOR, _build_operator)


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


def _load_kinds() -> None:
    for name in KIND_MODULES:
        importlib.import_module(name)


def deliver_pending(settings: Settings, store: Store, *, owner: str | None = None,
                    stop: threading.Event | None = None, limit: int | None = None) -> PassResult:
    """Send every due mail once (one pass); returns what happened. Safe to run in any
    number of processes at once: each mail is leased to one sender."""
    _load_kinds()
    result = PassResult()
    if not transport_configured(settings):
        return result
    run = _Pass(settings, store, owner or worker_id(), result)
    try:
        while not (stop and stop.is_set()) and (limit is None or result.handled < limit):
            want = BATCH if limit is None else min(BATCH, limit - result.handled)
            batch = store.claim_mails(run.owner, settings.smtp.lease_seconds, want)
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

    def __init__(self, settings: Settings, store: Store, owner: str, result: PassResult):
        self.settings, self.store, self.owner, self.result = settings, store, owner, result
        self.transport: FileSink | SmtpSession | None = None
        self.broken: TransportError | None = None
        self._pending: list[Callable[[], None]] = []
        self._since = 0.0

    def attempt(self, mail: OutboxMail) -> None:
        kind = KINDS.get(mail.kind)
        if kind is None:
            self.defer(mail, MailError("unknown mail kind",
                                       f"{mail.kind}: add its module to KIND_MODULES"))
            return
        try:
            message = kind.build(mail, self.settings, self.store)
            if message_size(message) > LARGE_MESSAGE:
                self.flush()
            self.transport = self.transport or open_transport(self.settings)
            refused = self.transport.send(
                self.settings.smtp.from_address, mail.recipients, message,
                name=_sink_name(mail), keepalive=functools.partial(
                    self.store.renew_leases, self.owner, self.settings.smtp.lease_seconds))
        except BuildError as exc:
            self.fail(mail, kind, str(exc), str(exc))
        except Rejected as exc:
            if exc.permanent:
                self.fail(mail, kind, exc.error_class, str(exc))
            else:
                self.defer(mail, exc)
        except TransportError as exc:
            self.broken = exc
            self.defer(mail, exc)
        except Exception as exc:  # a bug or a database hiccup: try again later
            log.exception("mail #%d (%s %s) could not be sent", mail.id, mail.kind,
                          mail.reference)
            self._close_transport()  # it may be mid-transaction
            self.defer(mail, MailError("internal error", type(exc).__name__))
        else:
            where = self.transport.describe()
            self.result.sent += 1
            self._later(functools.partial(_mark_sent, self.settings, self.store, mail, kind,
                                          refused, where))

    def defer(self, mail: OutboxMail, exc: MailError) -> None:
        s, now = self.settings.smtp, self.store.clock()
        if now - mail.created_at >= timedelta(days=s.give_up_days):
            gave_up = f"gave up after {s.give_up_days} days"
            self.fail(mail, KINDS.get(mail.kind), f"{gave_up}: {exc.error_class}",
                      f"{gave_up}; last error: {exc}")
            return
        next_at = now + backoff(mail.attempts, self.settings)
        self.result.deferred += 1
        self.result.errors.append(exc.error_class)
        level = logging.ERROR if isinstance(exc, TransportError) else logging.WARNING
        log.log(level, "mail #%d (%s %s) not sent, stays queued: %s; next try %s", mail.id,
                mail.kind, mail.reference, exc, f"{next_at:%Y-%m-%d %H:%M:%S} UTC")
        self._later(functools.partial(self.store.mail_deferred, mail, self.owner, next_at,
                                      exc.error_class, str(exc)))

    def fail(self, mail: OutboxMail, kind: Kind | None, error_class: str, detail: str) -> None:
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
        if self._pending:
            with self.store.transaction():
                for step in self._pending:
                    step()
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


def _mark_sent(settings: Settings, store: Store, mail: OutboxMail, kind: Kind | None,
               refused: dict[str, str], where: str) -> None:
    detail = f"accepted by {where}"
    if refused:
        detail += f"; refused for {len(refused)} of {len(mail.recipients)} recipients"

    def also() -> None:
        if kind and kind.on_sent:
            kind.on_sent(mail, store)
        if refused:
            reasons = "; ".join(sorted(set(refused.values())))
            store.audit("failed", "failed", reference=mail.reference, form_id=mail.form_id,
                        detail=f"{mail.kind} mail refused for {len(refused)} recipient(s): "
                               f"{reasons}")
            if mail.kind != OPERATOR:
                tell_operator(store, settings, f"mail {mail.reference} not delivered to "
                              f"{len(refused)} recipient(s)",
                              _failure_text(mail, reasons, partial=True),
                              reference=mail.reference, form_id=mail.form_id)

    store.mail_done(mail, "sent", detail, also=also)
    log.info("mail #%d (%s %s) %s, attempt %d", mail.id, mail.kind, mail.reference, detail,
             mail.attempts)


def _mark_failed(settings: Settings, store: Store, mail: OutboxMail, kind: Kind | None,
                 error_class: str, detail: str) -> None:
    def also() -> None:
        if kind and kind.on_failed:
            kind.on_failed(mail, store)
        if mail.kind != OPERATOR:
            tell_operator(store, settings, f"mail {mail.reference or mail.id} failed",
                          _failure_text(mail, detail), reference=mail.reference,
                          form_id=mail.form_id)

    store.mail_done(mail, "failed", detail, error_class=error_class, also=also)


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


def retry(store: Store, ident: str) -> list[OutboxMail]:
    """Queue failed mails again, by outbox id or reference."""
    with store.transaction():
        mails = store.retry_mail(ident)
        for mail in mails:
            if mail.kind == SUBMISSION:
                store.set_status(mail.reference, "queued")
    return mails


# -- key expiry reminders ----------------------------------------------------------------
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
                f"{when}, on {st.expires:%Y-%m-%d %H:%M} UTC.\n\n"
                f"From then on these forms refuse submissions: {', '.join(forms) or 'none'}.\n"
                f"Ask the clinician for a renewed key (or a new one, and update the "
                f"fingerprint in the config), then run `formrelay keys import {rid}`.\n")
        if not settings.server.operator_email:
            log.warning("%s; set server.operator_email to be mailed about it", subject)
            continue

        def queue(subject: str = subject, body: str = body) -> None:
            tell_operator(store, settings, subject, body)

        if store.first_key_reminder(st.fingerprint, f"{st.expires:%Y-%m-%d}", days, queue):
            log.warning("%s; operator mailed", subject)
            reminded.append(rid)
    return reminded


# -- the worker loop ---------------------------------------------------------------------
def run_worker(settings: Settings, store: Store, *, stop: threading.Event | None = None,
               interval: float = 2.0,
               key_status: Callable[[], Mapping[str, KeyStatus]] | None = None) -> None:
    """Deliver until `stop` is set (a send in progress finishes first); check the keys'
    expiry once a day if `key_status` is given."""
    stop = stop or threading.Event()
    owner = worker_id()
    next_key_check = 0.0
    log.info("delivery worker %s started", owner)
    while not stop.is_set():
        try:
            deliver_pending(settings, store, owner=owner, stop=stop)
            retention.periodic(settings, store)  # batched notices; hourly purge
            if key_status is not None and time.monotonic() >= next_key_check:
                check_key_expiry(settings, store, key_status(), store.clock())
                next_key_check = time.monotonic() + KEY_CHECK_SECONDS
        except Exception:  # keep delivering; the next pass tries again
            log.exception("delivery pass failed; trying again in %.0f s", interval)
        stop.wait(interval)
    log.info("delivery worker %s stopped", owner)


def start_background(settings: Settings, store: Store, *, interval: float = 1.0,
                     key_status: Callable[[], Mapping[str, KeyStatus]] | None = None,
                     ) -> tuple[threading.Thread, threading.Event]:
    """Run the worker in a daemon thread of this process (the demo); set the returned
    event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, name="formrelay-delivery", daemon=True,
                              args=(settings, store),
                              kwargs={"stop": stop, "interval": interval,
                                      "key_status": key_status})
    thread.start()
    return thread, stop

