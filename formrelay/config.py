"""Load and check formrelay's configuration.

`load_config(path, environ)` is a pure function: it reads one TOML file, takes the
secrets from ``FORMRELAY_*`` environment variables and returns frozen settings. Every
setting is declared exactly once, below, as a dataclass field with its default and help
text; the loader, `config.example.toml` and the documentation tests all read those
declarations. Any problem raises `ConfigError` naming the file, the key and the fix.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .theme import problems as theme_problems

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


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and how to fix it."""


def setting(default: Any = REQUIRED, help: str = "", choices: tuple[Any, ...] = ()) -> Any:
    """Declare one setting: its default (or REQUIRED), help text and allowed values."""
    meta = {"default": default, "help": help, "choices": choices}
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
    practice_name: str = setting(help="Practice name shown on forms, copies and mails.")
    practice_phone: str = setting(help="Phone number patients call when a form is unavailable.")
    practice_email: str = setting("", "Contact address shown to patients (optional).")
    operator_email: str = setting("", "Who is told about expiring keys and stuck mail.")
    log_level: str = setting("INFO", "Log level.", ("DEBUG", "INFO", "WARNING", "ERROR"))
    max_request_mb: int = setting(25, "Largest accepted request body in MB (uploads included).")
    max_fields: int = setting(200, "Most form fields accepted in one post.")
    min_fill_seconds: int = setting(3, "Posts sent sooner after the form was shown are refused.")
    form_token_max_age_minutes: int = setting(
        240, "How long a shown form stays valid before the patient must send again."
    )
    rate_limit_ip: str = setting(
        "10/minute;60/hour", "Posts allowed per client address (flask-limiter syntax)."
    )
    rate_limit_form: str = setting("600/hour", "Posts allowed per form, all clients together.")
    rate_limit_storage: str = setting(
        "",
        "Where rate-limit counters live (limits storage URI); empty = the database file, "
        "shared by all worker processes.",
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
        7, "Days a patient copy link works (1 to 30); then the copy is deleted."
    )
    copy_downloads: int = setting(
        3, "Downloads of a patient copy (1 to 10); the last one deletes it."
    )
    copy_mail_subject: str = setting(
        "", "Subject of the mail with a patient's copy link; neutral, never the form title. "
        "Empty = 'Uw kopie staat klaar' / 'Your copy is ready' and the practice name."
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
    key_file: str = setting(help="Exported public key (.asc); relative to this file.")
    fingerprint: str = setting(help="The key's full fingerprint, checked with the clinician.")


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    name: str = setting(help="Field name: letters, digits and underscores.")
    type: str = setting(help="Field type.", choices=FIELD_TYPES)
    label: str = setting(help="Question shown to the patient (the exact consent text).")
    required: bool = setting(False, "The patient must answer.")
    min_length: int = setting(0, "Fewest characters for text answers.")
    max_length: int = setting(0, "Most characters for text answers; 0 = the type's default.")
    min: float | None = setting(None, "Lowest number (number fields).")
    max: float | None = setting(None, "Highest number (number fields).")
    choices: list[str] = setting([], "Options for select, radio and checkboxes.")
    help: str = setting("", "Help text under the question.")
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
    retention_days: int = setting(30, "Days held submissions are kept before deletion.")
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
    notice: str = setting("", "Notice shown at the top, e.g. 'Bij spoed: bel 112'.")
    intro: str = setting("", "Short introduction under the title.")
    fields: tuple[FieldSpec, ...] = setting(help="The questions, as [[forms.<id>.fields]].")


@dataclass(frozen=True, kw_only=True)
class Settings:
    path: Path
    secret_key: str
    server: ServerSettings
    smtp: SmtpSettings
    recipients: Mapping[str, Recipient]
    forms: Mapping[str, FormSpec]
    theme: ThemeSettings = field(default_factory=lambda: ThemeSettings())

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.server.data_dir)

    def resolve(self, value: str) -> Path:
        """A path from the config file, relative to the file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def form(self, form_id: str) -> FormSpec | None:
        return self.forms.get(form_id)


SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "smtp": SmtpSettings,
    "theme": ThemeSettings,
    "recipients.<id>": Recipient,
    "forms.<id>": FormSpec,
    "forms.<id>.fields": FieldSpec,
}
NOT_IN_FILE = {("smtp", "password"), ("recipients.<id>", "id"), ("forms.<id>", "id")}


def documented_keys() -> list[tuple[str, str]]:
    """Every (section, key) a config file may hold; the docs tests check these."""
    return [
        (section, f.name)
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if (section, f.name) not in NOT_IN_FILE
    ]


_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_RESERVED_FIELDS = {"_token", "_hp", "_copy", "_lang", "csrf_token"}


class _Loader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}; {fix}")

    def build(self, cls: type, table: Any, where: str, extra: dict[str, Any] | None = None) -> Any:
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table", f"write it as [{where}]")
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = dict(extra or {})
        for key in table:
            if key not in known or key in values or (key == "password" and cls is SmtpSettings):
                hint = ", ".join(sorted(k for k in known if k not in values))
                if key == "password":
                    raise self.fail(
                        f"{where}.{key}",
                        "secrets are not read from the file",
                        f"remove it and set {SMTP_PASSWORD_ENV} in the environment",
                    )
                raise self.fail(f"{where}.{key}", "unknown setting", f"use one of: {hint}")
        for name, f in known.items():
            if name in values:
                continue
            meta = f.metadata
            if name not in table:
                if meta["default"] is REQUIRED:
                    raise self.fail(
                        f"{where}.{name}", "missing", f"add it ({meta['help'].rstrip('.')})"
                    )
                continue
            values[name] = self.check_value(f"{where}.{name}", table[name], f)
        return cls(**values)

    def check_value(self, key: str, value: Any, f: dataclasses.Field[Any]) -> Any:
        default = f.metadata["default"]
        choices = f.metadata["choices"]
        want = str(f.type)
        if want.startswith("list[str]"):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            kind = "a list of strings"
        elif want == "bool":
            ok, kind = isinstance(value, bool), "true or false"
        elif want == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
            kind = "a whole number"
        elif want.startswith("float"):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            kind = "a number"
            value = float(value) if ok else value
        else:
            ok, kind = isinstance(value, str), "a string"
        if not ok:
            example = default if default not in (REQUIRED, None) else "…"
            raise self.fail(key, f"must be {kind}, not {value!r}", f"e.g. {key.split('.')[-1]} = "
                            f"{_toml_repr(example)}")
        if choices:
            bad = [v for v in (value if isinstance(value, list) else [value]) if v not in choices]
            if bad:
                raise self.fail(key, f"{bad[0]!r} is not allowed",
                                f"use one of: {', '.join(choices)}")
        if want == "int" and value < 0:
            raise self.fail(key, "must not be negative", "use 0 or more")
        return value


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_repr(v) for v in value) + "]"
    return str(value)


def normalize_fingerprint(value: str) -> str:
    return re.sub(r"\s+", "", value).upper()


def load_config(path: str | Path, environ: Mapping[str, str]) -> Settings:
    """Read, check and freeze the configuration in `path`; secrets come from `environ`."""
    path = Path(path).expanduser().resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; copy config.example.toml there or pass --config"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    return parse_config(raw, path, environ)


def parse_config(raw: Mapping[str, Any], path: Path, environ: Mapping[str, str]) -> Settings:
    """Check an already-parsed TOML mapping; `path` names it in errors and anchors paths."""
    ld = _Loader(path)
    for key in raw:
        if key not in ("server", "smtp", "theme", "recipients", "forms"):
            raise ld.fail(key, "unknown section", "use [server], [smtp], [theme], "
                          "[recipients.<id>] and [forms.<id>]")
    if "server" not in raw:
        raise ld.fail("server", "missing", "add a [server] section with practice_name and "
                      "practice_phone")
    server: ServerSettings = ld.build(ServerSettings, raw["server"], "server")
    smtp_raw = raw.get("smtp", {})
    password = environ.get(SMTP_PASSWORD_ENV, "")
    smtp: SmtpSettings = ld.build(SmtpSettings, smtp_raw, "smtp", {"password": password})
    _check_server(ld, server)
    _check_smtp(ld, smtp)
    theme: ThemeSettings = ld.build(ThemeSettings, raw.get("theme", {}), "theme")
    for key, problem, fix in theme_problems(theme):
        raise ld.fail(f"theme.{key}", problem, fix)

    recipients: dict[str, Recipient] = {}
    rtables = raw.get("recipients", {})
    if not isinstance(rtables, dict):
        raise ld.fail("recipients", "must hold tables", "write [recipients.<id>]")
    for rid, table in rtables.items():
        where = f"recipients.{rid}"
        if not _ID.match(rid):
            raise ld.fail(where, "bad id", "use lowercase letters, digits, - and _")
        r: Recipient = ld.build(Recipient, table, where, {"id": rid})
        fpr = normalize_fingerprint(r.fingerprint)
        if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fpr):
            raise ld.fail(f"{where}.fingerprint", f"{r.fingerprint!r} is not a full fingerprint",
                          "copy the 40-character fingerprint from `gpg --fingerprint`")
        if "@" not in r.email:
            raise ld.fail(f"{where}.email", f"{r.email!r} is not an e-mail address",
                          "write the clinician's address")
        recipients[rid] = dataclasses.replace(r, fingerprint=fpr)

    forms: dict[str, FormSpec] = {}
    ftables = raw.get("forms", {})
    if not isinstance(ftables, dict):
        raise ld.fail("forms", "must hold tables", "write [forms.<id>]")
    for fid, table in ftables.items():
        forms[fid] = _build_form(ld, fid, table, recipients, smtp)

    secret = environ.get(SECRET_KEY_ENV, "")
    if len(secret) < 32:
        raise ConfigError(
            f"{path}: {SECRET_KEY_ENV} is {'too short' if secret else 'not set'}; set it to a "
            "random value of 32+ characters, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    return Settings(path=path, secret_key=secret, server=server, smtp=smtp,
                    recipients=recipients, forms=forms, theme=theme)


def _check_server(ld: _Loader, server: ServerSettings) -> None:
    if not re.match(r"^https?://[^/\s]+", server.base_url):
        raise ld.fail("server.base_url", f"{server.base_url!r} is not a URL",
                      "write e.g. https://forms.example.nl")
    if server.max_request_mb < 1:
        raise ld.fail("server.max_request_mb", "must be at least 1", "e.g. 25")
    for key in ("session_idle_minutes", "session_max_hours", "login_max_failures",
                "login_max_failures_ip", "audit_retention_years"):
        if getattr(server, key) < 1:
            raise ld.fail(f"server.{key}", "must be at least 1",
                          f"e.g. {key} = {ServerSettings.__dataclass_fields__[key].default}")
    # patient copies: a link that works for months, or for many downloads, is no longer
    # the short-lived pickup the patient was promised
    for key, top in (("copy_expiry_days", 30), ("copy_downloads", 10)):
        if not 1 <= getattr(server, key) <= top:
            raise ld.fail(f"server.{key}", f"must be between 1 and {top}",
                          f"e.g. {key} = {ServerSettings.__dataclass_fields__[key].default}")


def _check_smtp(ld: _Loader, smtp: SmtpSettings) -> None:
    if smtp.security == "none" and smtp.host and not _is_loopback(smtp.host):
        raise ld.fail("smtp.security", f"'none' is refused for {smtp.host}",
                      "use starttls or tls; plain SMTP is only allowed to a loopback relay")
    if (smtp.host or smtp.sink_dir) and "@" not in smtp.from_address:
        raise ld.fail("smtp.from_address", "missing", "set the practice's sender address")
    if smtp.lease_seconds <= smtp.timeout_seconds:
        raise ld.fail("smtp.lease_seconds", "must be longer than timeout_seconds",
                      f"e.g. lease_seconds = {max(300, smtp.timeout_seconds * 3)}")
    for key in ("max_message_mb", "retry_seconds", "retry_max_minutes", "give_up_days",
                "timeout_seconds"):
        if getattr(smtp, key) < 1:
            raise ld.fail(f"smtp.{key}", "must be at least 1", "use 1 or more")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _build_form(ld: _Loader, fid: str, table: Any, recipients: Mapping[str, Recipient],
                smtp: SmtpSettings) -> FormSpec:
    where = f"forms.{fid}"
    if not _ID.match(fid):
        raise ld.fail(where, "bad id", "use lowercase letters, digits, - and _")
    if not isinstance(table, dict):
        raise ld.fail(where, "must be a table", f"write [{where}]")
    raw_fields = table.get("fields", REQUIRED)
    if raw_fields is REQUIRED or not isinstance(raw_fields, list) or not raw_fields:
        raise ld.fail(f"{where}.fields", "missing", f"add at least one [[{where}.fields]]")
    fields: list[FieldSpec] = []
    seen: set[str] = set()
    for i, ft in enumerate(raw_fields):
        fwhere = f"{where}.fields[{i}]"
        spec: FieldSpec = ld.build(FieldSpec, ft, fwhere)
        if not _FIELD_NAME.match(spec.name) or spec.name in _RESERVED_FIELDS:
            raise ld.fail(f"{fwhere}.name", f"{spec.name!r} is not a usable name",
                          "use lowercase letters, digits and _, starting with a letter")
        if spec.name in seen:
            raise ld.fail(f"{fwhere}.name", f"{spec.name!r} is used twice", "rename one")
        seen.add(spec.name)
        if spec.type in CHOICE_TYPES and not spec.choices:
            raise ld.fail(f"{fwhere}.choices", "missing", f"list the options of this {spec.type}")
        if spec.type == "file":
            bad = [a for a in spec.accept if a.lower() not in _KNOWN_UPLOADS]
            if bad:
                raise ld.fail(f"{fwhere}.accept", f"{bad[0]!r} is not supported",
                              f"use some of: {', '.join(sorted(_KNOWN_UPLOADS))}")
        fields.append(spec)
    rest = {k: v for k, v in table.items() if k != "fields"}
    form: FormSpec = ld.build(FormSpec, rest, where, {"id": fid, "fields": tuple(fields)})
    if not form.recipients:
        raise ld.fail(f"{where}.recipients", "empty", "name at least one [recipients.<id>]")
    for rid in form.recipients:
        if rid not in recipients:
            known = ", ".join(recipients) or "none defined yet"
            raise ld.fail(f"{where}.recipients", f"unknown recipient {rid!r}",
                          f"add [recipients.{rid}] or use one of: {known}")
    for origin in form.allowed_origins:
        if not re.fullmatch(r"https?://[a-z0-9.-]+(:\d+)?", origin, re.IGNORECASE):
            raise ld.fail(f"{where}.allowed_origins", f"{origin!r} is not an origin",
                          "write scheme and host only, e.g. https://www.praktijk.nl")
    if form.delivery == "email" and not (smtp.host or smtp.sink_dir):
        raise ld.fail(f"{where}.delivery", "email needs a mail relay",
                      "configure [smtp] host (or sink_dir), or set delivery = \"hold\"")
    if form.patient_copy and not (smtp.host or smtp.sink_dir):
        raise ld.fail(f"{where}.patient_copy", "the copy's link is sent by mail",
                      "configure [smtp] host (or sink_dir), or set patient_copy = false")
    if form.patient_copy_pgp and not form.patient_copy:
        raise ld.fail(f"{where}.patient_copy_pgp", "needs patient_copy = true",
                      "set patient_copy = true, or remove patient_copy_pgp")
    if form.retention_days < 1:
        raise ld.fail(f"{where}.retention_days", "must be at least 1",
                      "e.g. retention_days = 30 (held submissions are deleted after it)")
    return form


# Extensions formrelay can recognise by their first bytes (see forms.sniff_upload).
_KNOWN_UPLOADS = {"pdf", "jpg", "jpeg", "png", "gif", "heic", "txt", "docx", "odt"}
