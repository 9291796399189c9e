"""The texts of the upload mails: the link to the patient, the notice to the recipients.

Both carry no health data: the practice's name, a reference, a link or a pointer to the
clinician area, the contact line. Subjects are neutral (never a form title). The From
address is the practice's own, found from the practice the link was made for, since a
link a clinician sends to a new patient names no form.
"""

from __future__ import annotations

from ..i18n import translations
from ..mail.kinds import plain_message
from ..settings import PracticeSettings, Settings
from ..store import OutboxMail


def _message(mail: OutboxMail, settings: Settings, practice: PracticeSettings, subject: str,
             body: str) -> bytes:
    return plain_message(mail, settings, subject, body,
                         sender=practice.sender or settings.sender)


def _contact(practice: PracticeSettings, lang: str) -> str:
    _ = translations(lang).gettext
    parts = [practice.name, f"{_('Phone')} {practice.phone}"]
    if practice.email:
        parts.append(practice.email)
    return " · ".join(parts)


def link_message(mail: OutboxMail, settings: Settings, practice: PracticeSettings, lang: str,
                 link: str, expires: str, note: str = "") -> bytes:
    _ = translations(lang).gettext
    # the clinician's note: one plain line, checked when the link was made (links.py)
    said = [_("A note from the practice: %(note)s") % {"note": note}, ""] if note else []
    body = "\n".join([
        practice.name,
        "",
        _("You can send documents to the practice (photos, letters, videos)."),
        *said,
        _("Open this link to upload them. They are encrypted in your browser, so that "
          "only the practice can read them:"),
        "",
        link,
        "",
        _("The link works until %(date)s, for one upload session. Only you have this link: "
          "do not forward this e-mail.") % {"date": expires},
        "",
        _("Did you not ask for this? Then you can ignore this e-mail."),
        "",
        _contact(practice, lang),
        "",
    ])
    subject = _("Send documents to %(practice)s") % {"practice": practice.name}
    return _message(mail, settings, practice, subject, body)


def notice_message(mail: OutboxMail, settings: Settings, practice: PracticeSettings,
                   files: int) -> bytes:
    """To the recipients, in English like the other clinician mail: which reference has
    new documents and where to fetch them; never a file name or content."""
    area = f"{settings.server.base_url.rstrip('/')}/clinician/uploads"
    body = "\n".join([
        f"New documents for {mail.reference}: {files} file(s), encrypted to your key.",
        "",
        f"Download them in the clinician area: {area}",
        "They are held there, never mailed (they can be large).",
        "",
        practice.name,
        "",
    ])
    return _message(mail, settings, practice, f"New documents ({mail.reference})", body)
