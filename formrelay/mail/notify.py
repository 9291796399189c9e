"""The notification mail for held submissions: nothing a reader could learn about a patient.

When a submission is held for download, the form's recipients get a plain mail naming
the practice, the form's title, the reference, the time and the link to the clinician
area. It is queued in the submission's own transaction (through the outbox, so it gets
TLS and retries like any mail). A form with `notify_batch_minutes` gets at most one mail
per that many minutes, listing every reference since the last one; the worker sends
those batches (`flush`, run from `retention.periodic`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..crypto import pins
from ..i18n import gettext
from ..intake.pipeline import RecordOnly, Stored
from ..localtime import iso, local_date, parse_iso, shown
from ..settings import FormSpec, Settings
from ..store import OutboxMail, Store
from .kinds import MailKind, Recorded, plain_message, recorded, recorded_for, sealed_context
from .transport import Message, transport_configured

log = logging.getLogger("formrelay.notify")

KIND = "held-notice"
_waiting: set[tuple[str, str]] = set()  # (form, practice) whose notices wait, logged once


def _enqueue(settings: Settings, store: Store, spec: FormSpec,
             items: list[dict[str, str]]) -> None:
    # what the mail says of the form and its practice is recorded now, with the mail
    payload = json.dumps({"form_id": spec.id, "items": items, "title": spec.title,
                          "days": spec.retention_days}).encode()
    reference = items[0]["reference"] if len(items) == 1 else ""
    rec = recorded_for(settings.practice_of(spec.id), spec.lang)
    store.outbox.enqueue(KIND, reference, settings.recipient_emails(spec), payload=payload,
                         form_id=spec.id, practice=rec.practice,
                         context=sealed_context(settings, rec, reference))


@dataclass(frozen=True)
class HeldNotice(RecordOnly):
    """The pipeline step (intake/pipeline.py): a held submission's notification, or its place in
    the next batch, in the submission's own transaction."""

    store: Store
    settings: Settings

    def record(self, stored: Stored, prepared: None) -> None:
        if stored.delivery != "hold":
            return
        sub, spec, store = stored.sub, stored.spec, self.store
        if not transport_configured(self.settings):
            log.warning("form %s: %s held, but no notification sent: configure [smtp]",
                        spec.id, sub.reference)
            return
        if spec.notify_batch_minutes:
            store.submissions.add_notice(sub.reference, spec.id, sub.received_at, spec.practice)
        else:
            _enqueue(self.settings, store, spec, [{"reference": sub.reference,
                                                   "received_at": iso(sub.received_at)}])


def flush(settings: Settings, store: Store, now: datetime | None = None) -> int:
    """Queue every batch that is due; returns how many mails were queued."""
    queued = 0
    for form_id, practice in store.submissions.notice_forms():
        spec = settings.form(form_id)
        if spec is None or not transport_configured(settings):
            continue
        if spec.practice != practice:
            # the form now belongs to another practice: its recipients must not be told
            # of this one's submissions; they wait until the form is back where it was
            # (said once per process, not at every pass of the worker)
            if (form_id, practice) not in _waiting:
                _waiting.add((form_id, practice))
                log.warning("form %s: held notices of practice %s wait, the form now "
                            "belongs to practice %s", form_id, practice, spec.practice)
            continue
        # to the form's readers now, with the practice owner's changes, as the relay
        # encrypts to them (a reader taken off is told of no later batch)
        spec = pins.with_readers(store, settings.recipients, spec)
        with store.transaction():
            rows = store.submissions.notices_due(form_id, spec.notify_batch_minutes, practice)
            if rows:
                _enqueue(settings, store, spec, rows)
                queued += 1
    return queued


def _body(settings: Settings, s: Recorded, title: str, days: int,
          items: list[dict[str, str]], lang: str) -> tuple[str, str]:
    def t(msg: str, **params: object) -> str:
        return gettext(lang, msg, **params)

    subject = t("%(practice)s: new form to download", practice=s.name) \
        if len(items) == 1 else \
        t("%(practice)s: %(n)s new forms to download", practice=s.name, n=len(items))
    lines = [t("New answers to the form \"%(title)s\" of %(practice)s are stored encrypted "
               "and wait for you to download them.", title=title, practice=s.name),
             ""]
    for item in items:
        received = parse_iso(item["received_at"])
        lines.append(t("Reference %(reference)s, received %(time)s, deleted after "
                       "%(date)s", reference=item["reference"],
                       time=shown(received, s.timezone, lang),
                       date=local_date(received + timedelta(days=days), s.timezone, lang)))
    lines += ["", t("Log in to download them:"),
              settings.server.base_url.rstrip("/") + "/clinician/", "",
              t("This mail holds no answers and no patient details. It was sent "
                "automatically by formrelay.")]
    return subject, "\n".join(lines) + "\n"


def build(mail: OutboxMail, settings: Settings, store: Store) -> Message:
    data = json.loads(mail.payload)
    rec = recorded(mail, settings)
    spec = settings.form(data["form_id"])  # only for a mail queued before they were recorded
    title = data.get("title") or (spec.title if spec else data["form_id"])
    days = int(data.get("days") or settings.retention_days(data["form_id"]))
    subject, body = _body(settings, rec, title, days, data["items"], rec.lang)
    return plain_message(mail, settings, subject, body)


MAIL = MailKind(KIND, build)  # in the worker's table: services.mail_kinds()
