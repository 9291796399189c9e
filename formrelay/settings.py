"""Every setting formrelay knows, declared exactly once.

Each setting is a dataclass field made by `setting()`, carrying its default (or
REQUIRED), its help text and its allowed values. The loader in config.py, the example
file `config.example.toml` and the documentation tests all read these declarations,
so a new setting is added here and nowhere else in code.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REQUIRED: Any = object()

FIELD_TYPES = (
    "text",
    "textarea",
    "email",
    "tel",
    "date",
    "number",
    "select",
    "radio",
    "checkboxes",
    "consent",
    "file",
    "bsn",
    "birthdate",
)
CHOICE_TYPES = ("select", "radio", "checkboxes")
LANGUAGES = ("nl", "en")
SECRET_KEY_ENV = "FORMRELAY_SECRET_KEY"  # noqa: S105 - a variable name, not a secret
SMTP_PASSWORD_ENV = "FORMRELAY_SMTP_PASSWORD"  # noqa: S105 - a variable name, not a secret
CONFIG_ENV = "FORMRELAY_CONFIG"
# Optional: `Authorization: Bearer <it>` on /healthz shows the operator's details.
HEALTH_TOKEN_ENV = "FORMRELAY_HEALTH_TOKEN"  # noqa: S105 - a variable name, not a secret
# The Redis password when server.rate_limit_storage is a redis:// URL (never in the URL).
REDIS_PASSWORD_ENV = "FORMRELAY_REDIS_PASSWORD"  # noqa: S105 - a variable name, not a secret
# Optional: server.database_url with its password, kept out of the config file.
DATABASE_URL_ENV = "FORMRELAY_DATABASE_URL"
# The variables holding secrets: they go in deploy/formrelay.env, never in the config file.
SECRET_ENVS = (SECRET_KEY_ENV, SMTP_PASSWORD_ENV, HEALTH_TOKEN_ENV, REDIS_PASSWORD_ENV,
               DATABASE_URL_ENV)

# Patient copies: a link that works for months, or for many downloads, is no longer the
# short-lived pickup the patient was promised.
COPY_MAX_EXPIRY_DAYS = 30
COPY_MAX_DOWNLOADS = 10
# Upload links: a link that works for months is no longer a one-time link.
UPLOAD_MAX_EXPIRY_DAYS = 30
# How long held submissions are kept, and the mail records of a form no longer configured.
DEFAULT_RETENTION_DAYS = 30
# File types an upload field may accept: extension -> the content type it is sent as.
# formrelay recognises each by its first bytes (forms.sniff_upload).
UPLOAD_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "heic": "image/heic",
    "txt": "text/plain",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "odt": "application/vnd.oasis.opendocument.text",
}


def is_loopback(host: str) -> bool:
    """Is `host` this machine (localhost or a loopback address)?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def database_url_problem(url: str) -> str | None:
    """What is wrong with server.database_url, or None (empty: the SQLite file)."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("postgresql", "postgres"):
        given = f"{parts.scheme}://" if parts.scheme else repr(url)
        return (f"must start with postgresql:// (not {given}); leave it empty for the "
                "SQLite file in data_dir")
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        return "names no database (postgresql://USER@HOST:5432/DATABASE)"
    return None


def setting(default: Any = REQUIRED, help: str = "", choices: tuple[Any, ...] = (), *,
            multiline: bool = False) -> Any:
    """Declare one setting: its default (or REQUIRED), help text and allowed values.
    Text is one line unless `multiline` (a text shown only inside a page or the encrypted
    message): a line break in a text that reaches a mail header would end that header."""
    meta = {"default": default, "help": help, "choices": choices, "multiline": multiline}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    base_url: str = setting(
        "http://127.0.0.1:8000",
        "Public URL of this service, used in widget code and links (https in production).",
    )
    data_dir: str = setting(
        "data", "Folder for the database and the GnuPG home; relative to this file."
    )
    database_url: str = setting(
        "", "PostgreSQL instead of the SQLite file in data_dir, for several app instances "
        "and workers on one database: postgresql://USER@HOST:5432/DATABASE (needs "
        "pip install 'formrelay[postgres]'). No password here: put the whole URL in "
        "FORMRELAY_DATABASE_URL, which replaces this setting. Empty: the SQLite file."
    )
    practice_name: str = setting(
        "", "Name of the default practice (the forms and recipients outside [practices.*]), "
        "shown on its forms, copies and mails. Required unless every form is in a practice."
    )
    practice_phone: str = setting(
        "", "Phone number patients of the default practice call when a form is unavailable."
    )
    practice_email: str = setting("", "Contact address shown to patients (optional).")
    operator_email: str = setting(
        "", "Who is told about expiring keys and stuck mail (the default practice's, and "
        "that of a practice without its own)."
    )
    practices_dir: str = setting(
        "", "Folder with one TOML file per practice (<id>.toml, holding what a "
        "[practices.<id>] table holds); relative to this file. Empty = none."
    )
    reload_seconds: int = setting(
        3, "How often (at most) a running process looks whether the config file or "
        "practices_dir changed, and then reloads it; 0 = only on SIGHUP."
    )
    log_level: str = setting("INFO", "Log level.", ("DEBUG", "INFO", "WARNING", "ERROR"))
    max_request_mb: int = setting(25, "Largest accepted request body in MB (uploads included).")
    max_fields: int = setting(200, "Most form fields accepted in one post.")
    body_timeout_seconds: int = setting(
        20, "Seconds a request body may take, plus one second per body_min_rate bytes "
        "received; a slower body is refused (408) and nothing of it is stored."
    )
    body_min_rate: int = setting(
        500, "Bytes per second a long request body must keep up on average (slow mobile "
        "links manage far more; a client trickling a few bytes does not)."
    )
    min_fill_seconds: int = setting(3, "Posts sent sooner after the form was shown are refused.")
    gpg_timeout_seconds: int = setting(
        30, "Longest time one gpg run may take (encryption, key checks); then it is stopped "
        "and forms show themselves unavailable until gpg answers again."
    )
    form_token_max_age_minutes: int = setting(
        240, "How long a shown form stays valid before the patient must send again."
    )
    rate_limit_ip: str = setting(
        "10/minute;60/hour", "Posts allowed per client address (flask-limiter syntax): "
        "to the forms, and as much again to read and reply to answers, and to ask for "
        "upload links."
    )
    rate_limit_form: str = setting("600/hour", "Posts allowed per form, all clients together.")
    rate_limit_storage: str = setting(
        "",
        "Where rate-limit counters live: empty = the database file, shared by the worker "
        "processes of one machine; redis://host:6379/0 (rediss:// for TLS) = Redis, shared "
        "by every app instance (password in FORMRELAY_REDIS_PASSWORD).",
    )
    trusted_proxies: int = setting(
        0, "Number of reverse proxies in front whose X-Forwarded-* headers are trusted."
    )
    session_idle_minutes: int = setting(
        15, "Clinician area: log out after this many minutes without a request."
    )
    session_max_hours: int = setting(8, "Clinician area: log out this many hours after login.")
    login_max_failures: int = setting(
        5, "Failed clinician logins per account within 15 minutes before it is paused."
    )
    login_max_failures_ip: int = setting(
        20, "Failed clinician logins per client address within 15 minutes before it is paused."
    )
    audit_retention_years: int = setting(
        5, "Years audit log rows are kept (NEN 7513 asks at least 5)."
    )
    copy_expiry_days: int = setting(
        7, f"Days a patient copy link works (1 to {COPY_MAX_EXPIRY_DAYS}); then the copy is "
        "deleted."
    )
    copy_downloads: int = setting(
        3, f"Downloads of a patient copy (1 to {COPY_MAX_DOWNLOADS}); the last one deletes it."
    )
    timezone: str = setting(
        "Europe/Amsterdam", "Time zone (IANA name) of every time shown to clinicians and "
        "patients: inbox, mails, copies; a practice may set its own. Storage and logs stay "
        "in UTC."
    )
    copy_mail_subject: str = setting(
        "", "Subject of the mail with a patient's copy link; neutral, never the form title. "
        "Empty = 'Uw kopie staat klaar' / 'Your copy is ready' and the practice name."
    )
    upload_expiry_days: int = setting(
        7, f"Days a patient's upload link works (1 to {UPLOAD_MAX_EXPIRY_DAYS}); then it "
        "answers 'expired, call the practice'."
    )
    upload_limit_mb: int = setting(
        2048, "Most MB one upload session may send (all its files together); a practice "
        "may set its own."
    )
    reply_expiry_days: int = setting(
        30, "Days a practice's answer to a patient can be read with the reply code; then "
        "it is deleted."
    )
    upload_reserve_mb: int = setting(
        1024, "Free space (MB) the data folder keeps: an upload that would leave less is "
        "refused with 'call the practice' (503); stored data is untouched."
    )


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    host: str = setting("", "Mail relay host; empty = no mail is sent (hold mode only).")
    port: int = setting(587, "Mail relay port (587 for STARTTLS, 465 for implicit TLS).")
    security: str = setting(
        "starttls",
        "starttls or tls (certificate verified); none is only allowed for a loopback relay.",
        ("starttls", "tls", "none"),
    )
    username: str = setting("", "Login name; the password comes from FORMRELAY_SMTP_PASSWORD.")
    from_address: str = setting("", "Sender address of every mail formrelay sends.")
    ca_file: str = setting("", "Extra CA certificate file to trust (private relays, tests).")
    timeout_seconds: int = setting(30, "Timeout for each network step of a delivery.")
    sink_dir: str = setting(
        "", "Write mail as .eml files into this folder instead of sending (demo, tests)."
    )
    max_message_mb: int = setting(
        7, "Largest encrypted message sent by mail, in MB (7 fits a 10 MB relay limit)."
    )
    retry_seconds: int = setting(
        60, "First retry after a temporary delivery failure, in seconds; doubles each time."
    )
    retry_max_minutes: int = setting(360, "Longest wait between two delivery attempts.")
    give_up_days: int = setting(
        5, "Days a mail is retried before it is marked failed and the operator is told."
    )
    lease_seconds: int = setting(
        300, "How long one worker owns a mail it is sending; after a crash another worker "
        "sends it once this has passed. Must be longer than timeout_seconds."
    )
    password: str = setting("", "Not read from the file: set FORMRELAY_SMTP_PASSWORD.")

    @property
    def configured(self) -> bool:
        """Can mail leave at all (a relay host or a sink folder)?"""
        return bool(self.host or self.sink_dir)


@dataclass(frozen=True, kw_only=True)
class ThemeSettings:
    accent: str = setting("#1f5f8b", "Buttons and links, as #rrggbb (white text on it must "
                          "be readable).")
    text: str = setting("#1d2733", "Text colour, as #rrggbb.")
    background: str = setting("#ffffff", "Page background, as #rrggbb.")
    font: str = setting('system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
                        "Font list (CSS font-family); the patient's own fonts, nothing loaded.")
    radius: str = setting("6px", "Corner radius of fields and buttons, e.g. 6px or 0.")


@dataclass(frozen=True, kw_only=True)
class Recipient:
    id: str = setting(help="The recipient's id (the table name).")
    email: str = setting(help="Where this clinician receives encrypted mail.")
    key_file: str = setting("", "Exported public key (.asc); a relative path starts from "
                            "the folder of the file that names it (a practice's own file "
                            "in practices_dir). Required with key_source = \"file\".")
    fingerprint: str = setting("", "The key's full fingerprint, checked with the clinician. "
                                   "Required with key_source = \"file\".")
    key_source: str = setting(
        "file", "\"file\": the key in key_file, pinned by fingerprint. \"browser\": no "
        "key file; the invited clinician makes the key in the clinician area, and it is "
        "pinned by its fingerprint then (the forms stay unavailable until that).",
        ("file", "browser"))
    practice: str = setting("default", "The practice it belongs to (where it is written).")
    source: str = setting("", "Where it is written: the file and the table, for messages.")


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    name: str = setting(help="Field name: letters, digits and underscores.")
    type: str = setting(help="Field type.", choices=FIELD_TYPES)
    label: str = setting(help="Question shown to the patient (the exact consent text).",
                         multiline=True)
    required: bool = setting(False, "The patient must answer.")
    min_length: int = setting(0, "Fewest characters for text answers.")
    max_length: int = setting(0, "Most characters for text answers; 0 = the type's default.")
    min: float | None = setting(None, "Lowest number (number fields).")
    max: float | None = setting(None, "Highest number (number fields).")
    choices: list[str] = setting([], "Options for select, radio and checkboxes.")
    help: str = setting("", "Help text under the question.", multiline=True)
    label_en: str = setting("", "English question, shown with ?lang=en; empty = label.",
                            multiline=True)
    help_en: str = setting("", "English help text; empty = help.", multiline=True)
    choices_en: list[str] = setting(
        [], "English options, in the same order and number as choices; the stored answer "
        "stays the choices value. Empty = choices."
    )
    autocomplete: str = setting("", "HTML autocomplete hint, e.g. name, email, bday.")
    accept: list[str] = setting(
        ["pdf", "jpg", "jpeg", "png"], "File types allowed for file fields (extensions)."
    )
    max_size_mb: int = setting(10, "Largest file for a file field, in MB.")

    @property
    def text_limit(self) -> int:
        if self.max_length:
            return self.max_length
        return 5000 if self.type == "textarea" else 200

    @property
    def upload_types(self) -> list[str]:
        """The extensions a file field accepts, as compared with an upload's name."""
        return [a.lower() for a in self.accept]


@dataclass(frozen=True, kw_only=True)
class FormSpec:
    id: str = setting(help="The form's id (the table name), used in URLs.")
    title: str = setting(help="Title shown above the form and inside the encrypted message.")
    lang: str = setting("nl", "Default language of the form.", LANGUAGES)
    recipients: list[str] = setting(help="Ids of the [recipients.*] who can decrypt it.")
    delivery: str = setting("email", "email (PGP/MIME) or hold (download).", ("email", "hold"))
    allowed_origins: list[str] = setting(
        [], "Websites allowed to embed the form, e.g. https://www.praktijk.nl."
    )
    retention_days: int = setting(
        DEFAULT_RETENTION_DAYS, "Days held submissions are kept before deletion."
    )
    oversize: str = setting(
        "refuse", "Email delivery: a submission larger than smtp.max_message_mb is refused "
        "at the form (refuse) or held for download instead (hold).", ("refuse", "hold"))
    notify_batch_minutes: int = setting(
        0, "Hold mode: at most one notification mail per this many minutes (0 = one per "
        "submission)."
    )
    patient_copy: bool = setting(False, "Offer the patient a copy (link + pickup code).")
    patient_copy_pgp: bool = setting(
        False, "With patient_copy: also offer a field for the patient's own OpenPGP public "
        "key; the copy is then also mailed to them encrypted to that key."
    )
    upload_link: bool = setting(
        False, "The thank-you page offers a one-time link, by mail, to upload documents "
        "(encrypted to the form's recipients) afterwards."
    )
    replies: bool = setting(
        False, "The thank-you page shows a reply code: the practice can answer securely, "
        "and only that code opens the answer (on /r/)."
    )
    notice: str = setting("", "Notice shown at the top, e.g. 'Bij spoed: bel 112'.",
                          multiline=True)
    intro: str = setting("", "Short introduction under the title.", multiline=True)
    title_en: str = setting("", "English title, shown with ?lang=en; empty = title.")
    notice_en: str = setting("", "English notice; empty = notice.", multiline=True)
    intro_en: str = setting("", "English introduction; empty = intro.", multiline=True)
    fields: tuple[FieldSpec, ...] = setting(help="The questions, as [[forms.<id>.fields]].")
    practice: str = setting("default", "The practice it belongs to (where it is written).")


DEFAULT_PRACTICE = "default"  # the practice of [server] practice_name, [recipients.*], [forms.*]


@dataclass(frozen=True, kw_only=True)
class PracticeSettings:
    id: str = setting(help="The practice's id (the table or file name); accounts name it.")
    name: str = setting(help="Practice name shown on its forms, copies and mails.")
    phone: str = setting(help="Phone number its patients call when a form is unavailable.")
    email: str = setting("", "Contact address shown to its patients (optional).")
    operator_email: str = setting(
        "", "Who is told about its expiring keys and stuck mail; empty = server.operator_email."
    )
    timezone: str = setting("", "Time zone (IANA name) of its times; empty = server.timezone.")
    from_address: str = setting(
        "", "Sender address of its mail; empty = smtp.from_address."
    )
    upload_limit_mb: int = setting(
        0, "Most MB one upload session of its patients may send; 0 = server.upload_limit_mb."
    )
    theme: ThemeSettings = setting(
        ThemeSettings(), "Its look, as [practices.<id>.theme]; unset keys come from [theme]."
    )
    recipients: tuple[str, ...] = setting(
        (), "Its recipients, as [practices.<id>.recipients.<id>]."
    )
    forms: tuple[str, ...] = setting((), "Its forms, as [practices.<id>.forms.<id>].")

    @property
    def sender(self) -> str:
        """The From address of this practice's mail (the loader fills in the fallback)."""
        return self.from_address


@dataclass(frozen=True, kw_only=True)
class Settings:
    path: Path
    secret_key: str
    server: ServerSettings
    smtp: SmtpSettings
    recipients: Mapping[str, Recipient]
    forms: Mapping[str, FormSpec]
    theme: ThemeSettings = field(default_factory=lambda: ThemeSettings())
    # every practice by id; the loader always makes at least one
    practices: Mapping[str, PracticeSettings] = field(default_factory=dict)
    health_token: str = field(default="", repr=False)  # HEALTH_TOKEN_ENV; "": states only
    redis_password: str = field(default="", repr=False)  # REDIS_PASSWORD_ENV
    # what the configuration was read from (config.py): each file's path and text, and
    # the stamp (path, mtime, size, inode) of what was read; reload.py compares the files
    # with these and keeps them as the last good configuration
    sources: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)
    stamps: tuple[tuple[str, int, int, int], ...] = field(default=(), repr=False,
                                                          compare=False)

    # -- where things are -------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.resolve(self.server.data_dir)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "formrelay.db"

    @property
    def gnupg_home(self) -> Path:
        return self.data_dir / "gnupg"

    @property
    def tmp_dir(self) -> Path:
        """Ciphertext on its way into the database, download spools, gpg scratch homes."""
        return self.data_dir / "tmp"

    @property
    def sink_path(self) -> Path | None:
        """The folder mail is written to instead of sent (smtp.sink_dir), or None."""
        return self.resolve(self.smtp.sink_dir) if self.smtp.sink_dir else None

    def resolve(self, value: str) -> Path:
        """A path from the config file, relative to the file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    # -- mail ----------------------------------------------------------------------------
    @property
    def mail_domain(self) -> str:
        """The domain of Message-IDs and of the default sender: base_url's host."""
        return urlsplit(self.server.base_url).hostname or "formrelay.invalid"

    @property
    def sender(self) -> str:
        """The From address of mail that belongs to no practice (the default practice's)."""
        return self.default_practice.sender

    # -- practices -----------------------------------------------------------------------
    @property
    def default_practice(self) -> PracticeSettings:
        """The practice of [server] practice_name, else the first one configured."""
        if DEFAULT_PRACTICE in self.practices:
            return self.practices[DEFAULT_PRACTICE]
        if self.practices:
            return next(iter(self.practices.values()))
        # settings made by hand (tests): the [server] values are the one practice
        s = self.server
        return PracticeSettings(id=DEFAULT_PRACTICE, name=s.practice_name,
                                phone=s.practice_phone, email=s.practice_email,
                                operator_email=s.operator_email, timezone=s.timezone,
                                from_address=self.smtp.from_address
                                or f"formrelay@{self.mail_domain}",
                                theme=self.theme, recipients=tuple(self.recipients),
                                forms=tuple(self.forms))

    def practice(self, practice_id: str) -> PracticeSettings | None:
        return self.practices.get(practice_id) or (
            self.default_practice if practice_id == self.default_practice.id else None)

    def practice_or_default(self, practice_id: str) -> PracticeSettings:
        return self.practice(practice_id) or self.default_practice

    def practice_of(self, form_id: str) -> PracticeSettings:
        """The practice of `form_id` (the default practice for a form no longer
        configured: its old records still need a sender and an operator)."""
        spec = self.forms.get(form_id)
        return (self.practice(spec.practice) if spec else None) or self.default_practice

    def practice_of_recipient(self, recipient_id: str) -> PracticeSettings:
        r = self.recipients.get(recipient_id)
        return (self.practice(r.practice) if r else None) or self.default_practice

    @property
    def is_local(self) -> bool:
        """Is base_url this machine (a demo or test, where plain http is fine)?"""
        return is_loopback(urlsplit(self.server.base_url).hostname or "")

    # -- forms ---------------------------------------------------------------------------
    def form(self, form_id: str) -> FormSpec | None:
        return self.forms.get(form_id)

    def recipients_of(self, spec: FormSpec) -> list[Recipient]:
        """The form's recipients, in the form's order."""
        return [self.recipients[r] for r in spec.recipients if r in self.recipients]

    def recipient_emails(self, spec: FormSpec) -> list[str]:
        return [r.email for r in self.recipients_of(spec)]

    def recipient_fingerprints(self, spec: FormSpec) -> list[str]:
        return [r.fingerprint for r in self.recipients_of(spec)]

    def retention_days(self, form_id: str) -> int:
        """Days a held submission of `form_id` is kept (the default for a form that is
        no longer configured)."""
        spec = self.form(form_id)
        return spec.retention_days if spec else DEFAULT_RETENTION_DAYS


SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "smtp": SmtpSettings,
    "theme": ThemeSettings,
    "recipients.<id>": Recipient,
    "forms.<id>": FormSpec,
    "forms.<id>.fields": FieldSpec,
    "practices.<id>": PracticeSettings,
}
# A practice's own theme, recipients and forms are written like the top-level ones,
# under [practices.<id>.theme], [practices.<id>.recipients.<id>], [practices.<id>.forms.<id>].
NOT_IN_FILE = {("smtp", "password"), ("recipients.<id>", "id"), ("forms.<id>", "id"),
               ("recipients.<id>", "practice"), ("recipients.<id>", "source"),
               ("forms.<id>", "practice"),
               ("practices.<id>", "id"), ("practices.<id>", "theme"),
               ("practices.<id>", "recipients"), ("practices.<id>", "forms")}


def documented_keys() -> list[tuple[str, str]]:
    """Every (section, key) a config file may hold; the docs tests check these."""
    return [
        (section, f.name)
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if (section, f.name) not in NOT_IN_FILE
    ]


__all__ = [
    "CHOICE_TYPES",
    "CONFIG_ENV",
    "COPY_MAX_DOWNLOADS",
    "COPY_MAX_EXPIRY_DAYS",
    "DATABASE_URL_ENV",
    "DEFAULT_PRACTICE",
    "DEFAULT_RETENTION_DAYS",
    "FIELD_TYPES",
    "HEALTH_TOKEN_ENV",
    "LANGUAGES",
    "NOT_IN_FILE",
    "REDIS_PASSWORD_ENV",
    "REQUIRED",
    "SECRET_ENVS",
    "SECRET_KEY_ENV",
    "SECTIONS",
    "SMTP_PASSWORD_ENV",
    "UPLOAD_MAX_EXPIRY_DAYS",
    "UPLOAD_TYPES",
    "FieldSpec",
    "FormSpec",
    "PracticeSettings",
    "Recipient",
    "ServerSettings",
    "Settings",
    "SmtpSettings",
    "ThemeSettings",
    "database_url_problem",
    "documented_keys",
    "is_loopback",
    "setting",
]
