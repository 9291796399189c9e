"""Load and check formrelay's configuration.

`load_config(path, environ)` is a pure function: it reads one TOML file, takes the
secrets from ``FORMRELAY_*`` environment variables and returns frozen settings. Every
setting is declared exactly once, in settings.py (import the declarations from there);
this module checks a file against them. Any problem raises `ConfigError` naming the file,
the key and the fix.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import OperatorError
from .localtime import zone
from .settings import (
    CHOICE_TYPES,
    COPY_MAX_DOWNLOADS,
    COPY_MAX_EXPIRY_DAYS,
    DATABASE_URL_ENV,
    DEFAULT_PRACTICE,
    DEFAULT_RETENTION_DAYS,
    HEALTH_TOKEN_ENV,
    REDIS_PASSWORD_ENV,
    REQUIRED,
    SECRET_KEY_ENV,
    SMTP_PASSWORD_ENV,
    UPLOAD_TYPES,
    FieldSpec,
    FormSpec,
    PracticeSettings,
    Recipient,
    ServerSettings,
    Settings,
    SmtpSettings,
    ThemeSettings,
    database_url_problem,
    is_loopback,
)
from .theme import problems as theme_problems


class ConfigError(OperatorError):
    """The configuration cannot be used; the message says where and how to fix it."""


class KeyFileProblem(ConfigError):
    """A recipient's key file cannot be read or does not hold its pinned key: a reload
    is refused; a start without a last good configuration serves the other practices
    (reload.py)."""


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
        multiline = f.metadata.get("multiline", False)
        for text in value if isinstance(value, list) else [value]:
            found = control_character(text, multiline) if isinstance(text, str) else None
            if found:
                raise self.fail(key, f"contains {found}",
                                "remove it" if multiline else "write it on one line, without "
                                "line breaks or other control characters")
        return value


_CONTROL_NAMES = {"\r": "a carriage return (\\r)", "\n": "a line break (\\n)",
                  "\t": "a tab (\\t)"}


def control_character(text: str, multiline: bool = False) -> str | None:
    """The first control character in `text` (named), or None. A line break in a text
    that reaches a mail header (a practice name in From, a subject) would end that
    header and start another: such text is refused when the file is loaded, not when a
    mail cannot be built after the patient was promised it. Texts shown only in pages
    and inside the encrypted message (`multiline`) may hold line breaks and tabs."""
    for ch in text:
        if multiline and ch in "\r\n\t":
            continue
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return _CONTROL_NAMES.get(ch, f"the control character U+{ord(ch):04X}")
    return None


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


class _Files:
    """Where a configuration's files are read from: the disk (keeping each file's text
    and the stamp of what was read), or a copy kept earlier (`saved`: path -> text, the
    last good configuration reload.py keeps)."""

    def __init__(self, saved: Mapping[str, str] | None = None):
        self.saved = saved
        self.texts: dict[str, str] = {}
        self.stamps: list[tuple[str, int, int, int]] = []

    def toml(self, path: Path, hint: str) -> dict[str, Any]:
        try:
            text = self._text(path)
            self.texts[str(path)] = text
            return tomllib.loads(text)
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found; {hint}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from None

    def _text(self, path: Path) -> str:
        if self.saved is not None:
            if str(path) not in self.saved:
                raise FileNotFoundError(path)
            return self.saved[str(path)]
        with path.open("rb") as fh:
            # the stamp of what is read, not of the file a moment later: a change made
            # meanwhile is seen by the next look (reload.signature)
            st = os.fstat(fh.fileno())
            data = fh.read()
        self.stamps.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        return data.decode("utf-8")

    def practice_files(self, path: Path, practices_dir: str) -> list[Path]:
        if self.saved is None:
            return practice_files(path, practices_dir)
        folder = practices_folder(path, practices_dir)
        return sorted(Path(p) for p in self.saved
                      if folder is not None and Path(p).parent == folder
                      and p.endswith(".toml"))


def load_config(path: str | Path, environ: Mapping[str, str], *,
                saved: Mapping[str, str] | None = None) -> Settings:
    """Read, check and freeze the configuration in `path`; secrets come from `environ`.
    With `saved` (path -> text, as `Settings.sources` holds them) the files' texts come
    from there instead of the disk: a configuration kept as the last good one."""
    path = Path(path).expanduser().resolve()
    files = _Files(saved)
    raw = files.toml(path, "copy config.example.toml there or pass --config")
    settings = parse_config(raw, path, environ, files=files)
    return dataclasses.replace(settings, sources=tuple(files.texts.items()),
                               stamps=tuple(files.stamps))


def practices_folder(path: Path, practices_dir: str) -> Path | None:
    """The folder `practices_dir` names (relative to the config file `path`), or None."""
    if not practices_dir:
        return None
    folder = Path(practices_dir).expanduser()
    return folder if folder.is_absolute() else (path.parent / folder).resolve()


def practice_files(path: Path, practices_dir: str) -> list[Path]:
    """The per-practice files of `practices_dir` (relative to the config file `path`)."""
    folder = practices_folder(path, practices_dir)
    if folder is None:
        return []
    if not folder.is_dir():
        raise ConfigError(f"{path}: server.practices_dir: {folder} is not a folder; create it "
                          "or empty the setting")
    return sorted(folder.glob("*.toml"))


_TOP = ("server", "smtp", "theme", "recipients", "forms", "practices")
_PRACTICE_TABLES = ("theme", "recipients", "forms")


def parse_config(raw: Mapping[str, Any], path: Path, environ: Mapping[str, str], *,
                 files: _Files | None = None) -> Settings:
    """Check an already-parsed TOML mapping; `path` names it in errors and anchors paths.
    `files` reads the practice files (default: from the disk)."""
    files = files or _Files()
    ld = _Loader(path)
    for key in raw:
        if key not in _TOP:
            raise ld.fail(key, "unknown section", "use [server], [smtp], [theme], "
                          "[recipients.<id>], [forms.<id>] and [practices.<id>]")
    if "server" not in raw:
        raise ld.fail("server", "missing", "add a [server] section with practice_name and "
                      "practice_phone")
    server: ServerSettings = ld.build(ServerSettings, raw["server"], "server")
    smtp_raw = raw.get("smtp", {})
    password = environ.get(SMTP_PASSWORD_ENV, "")
    smtp: SmtpSettings = ld.build(SmtpSettings, smtp_raw, "smtp", {"password": password})
    if _url_password(server.database_url):
        raise ld.fail("server.database_url", "secrets are not read from the file",
                      f"remove the password from the URL and set the whole URL in "
                      f"{DATABASE_URL_ENV} in the environment")
    if environ.get(DATABASE_URL_ENV):
        server = dataclasses.replace(server, database_url=environ[DATABASE_URL_ENV])
    _check_server(ld, server)
    _check_rate_limit_storage(ld, server.rate_limit_storage)
    _check_timezone(ld, "server.timezone", server.timezone)
    _check_smtp(ld, smtp)
    theme_raw = raw.get("theme", {})
    theme: ThemeSettings = ld.build(ThemeSettings, theme_raw, "theme")
    for key, problem, fix in theme_problems(theme):
        raise ld.fail(f"theme.{key}", problem, fix)

    # (loader, key prefix, id, table) of every practice: [practices.<id>], then the files
    found: list[tuple[_Loader, str, str, dict[str, Any]]] = []
    ptables = raw.get("practices", {})
    if not isinstance(ptables, dict):
        raise ld.fail("practices", "must hold tables", "write [practices.<id>]")
    for pid, table in ptables.items():
        if not isinstance(table, dict):
            raise ld.fail(f"practices.{pid}", "must be a table", f"write [practices.{pid}]")
        found.append((ld, f"practices.{pid}.", pid, table))
    for file in files.practice_files(path, server.practices_dir):
        pid = file.stem
        if pid in ptables:
            raise ConfigError(f"{file}: practice {pid!r} is also [practices.{pid}] in {path}; "
                              "keep one of them")
        found.append((_Loader(file), "", pid, files.toml(file, "")))

    has_default = bool(server.practice_name or raw.get("recipients") or raw.get("forms")
                       or not found)
    if has_default:
        for key in ("practice_name", "practice_phone"):
            if not getattr(server, key):
                raise ld.fail(f"server.{key}", "missing",
                              "add it (the default practice's, for the forms outside "
                              "[practices.*]), or put every form in a [practices.<id>]")
        found.insert(0, (ld, "", DEFAULT_PRACTICE, {
            "name": server.practice_name, "phone": server.practice_phone,
            "email": server.practice_email, "operator_email": server.operator_email,
            "timezone": server.timezone, "from_address": smtp.from_address,
            "recipients": raw.get("recipients", {}), "forms": raw.get("forms", {})}))

    recipients: dict[str, Recipient] = {}
    forms: dict[str, FormSpec] = {}
    practices: dict[str, PracticeSettings] = {}
    for pld, prefix, pid, table in found:
        if pid == DEFAULT_PRACTICE and prefix:
            raise pld.fail(prefix.rstrip("."), f"{DEFAULT_PRACTICE!r} is the practice of "
                           "[server] practice_name", "choose another id")
        practices[pid] = _build_practice(pld, prefix, pid, table, theme_raw, server, smtp,
                                         recipients, forms)

    secret = environ.get(SECRET_KEY_ENV, "")
    if len(secret) < 32:
        raise ConfigError(
            f"{path}: {SECRET_KEY_ENV} is {'too short' if secret else 'not set'}; set it to a "
            "random value of 32+ characters, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    health_token = environ.get(HEALTH_TOKEN_ENV, "")
    if health_token and len(health_token) < 32:
        raise ConfigError(
            f"{path}: {HEALTH_TOKEN_ENV} is too short; set it to a random value of 32+ "
            "characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`, "
            "or leave it unset (then /healthz shows only ok/warn/error per check)"
        )
    return Settings(path=path, secret_key=secret, server=server, smtp=smtp,
                    recipients=recipients, forms=forms, theme=theme, practices=practices,
                    health_token=health_token,
                    redis_password=environ.get(REDIS_PASSWORD_ENV, ""))


def _build_practice(ld: _Loader, prefix: str, pid: str, table: dict[str, Any],
                    theme_raw: Any, server: ServerSettings, smtp: SmtpSettings,
                    all_recipients: dict[str, Recipient], all_forms: dict[str, FormSpec],
                    ) -> PracticeSettings:
    """One practice: its own details, theme, recipients and forms. Recipient and form
    ids are unique across practices (a form's URL is /f/<form_id>)."""
    where = prefix.rstrip(".") or "practice"
    if not _ID.match(pid):
        raise ld.fail(where, "bad id", "use lowercase letters, digits, - and _")
    rest = {k: v for k, v in table.items() if k not in _PRACTICE_TABLES}
    own_theme = table.get("theme", {})
    if not isinstance(own_theme, dict):
        raise ld.fail(f"{prefix}theme", "must be a table", f"write [{prefix}theme]")
    theme: ThemeSettings = ld.build(ThemeSettings, {**theme_raw, **own_theme}, f"{prefix}theme")
    for key, problem, fix in theme_problems(theme):
        raise ld.fail(f"{prefix}theme.{key}", problem, fix)
    info: PracticeSettings = ld.build(PracticeSettings, rest, where,
                                      {"id": pid, "theme": theme})
    key = "server.timezone" if pid == DEFAULT_PRACTICE and not prefix else f"{prefix}timezone"
    timezone = info.timezone or server.timezone
    _check_timezone(ld, key, timezone)
    sender = info.from_address or smtp.from_address
    if info.from_address and "@" not in info.from_address:
        raise ld.fail(f"{prefix}from_address", f"{info.from_address!r} is not an e-mail address",
                      "write the practice's sender address")
    if smtp.configured and "@" not in sender:
        raise ld.fail(f"{prefix}from_address" if prefix else "smtp.from_address", "missing",
                      "set the practice's sender address")
    domain = urlsplit(server.base_url).hostname or "formrelay.invalid"

    def owner(ids: Mapping[str, Any], item: str) -> str:
        other = ids[item].practice
        return "the default practice" if other == DEFAULT_PRACTICE else f"practice {other!r}"

    recipients: dict[str, Recipient] = {}
    rtables = table.get("recipients", {})
    if not isinstance(rtables, dict):
        raise ld.fail(f"{prefix}recipients", "must hold tables", f"write [{prefix}recipients.<id>]")
    for rid, rtable in rtables.items():
        rwhere = f"{prefix}recipients.{rid}"
        if not _ID.match(rid):
            raise ld.fail(rwhere, "bad id", "use lowercase letters, digits, - and _")
        if rid in all_recipients:
            raise ld.fail(rwhere, f"recipient id {rid!r} is used by {owner(all_recipients, rid)} "
                          f"and by {_name(pid)}", "recipient ids must be unique across "
                          "practices: rename one")
        r: Recipient = ld.build(Recipient, rtable, rwhere,
                                {"id": rid, "practice": pid, "source": ""})
        if r.key_source == "browser":
            if r.key_file or r.fingerprint:
                raise ld.fail(rwhere, "key_source = \"browser\" takes no key_file or "
                              "fingerprint", "remove them: the clinician's browser-made key "
                              "is pinned when it is made")
            if "@" not in r.email:
                raise ld.fail(f"{rwhere}.email", f"{r.email!r} is not an e-mail address",
                              "write the clinician's address")
            recipients[rid] = dataclasses.replace(r, source=f"{ld.path}: {rwhere}")
            continue
        for name in ("key_file", "fingerprint"):
            if not getattr(r, name):
                raise ld.fail(f"{rwhere}.{name}", "missing", "add it (or set key_source = "
                              "\"browser\" for a key the clinician makes in the browser)")
        fpr = normalize_fingerprint(r.fingerprint)
        if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fpr):
            raise ld.fail(f"{rwhere}.fingerprint", f"{r.fingerprint!r} is not a full fingerprint",
                          "copy the 40-character fingerprint from `gpg --fingerprint`")
        if "@" not in r.email:
            raise ld.fail(f"{rwhere}.email", f"{r.email!r} is not an e-mail address",
                          "write the clinician's address")
        # a relative key path starts from the folder of the file that names it: a
        # practice's file in practices_dir carries its keys along
        key_file = Path(r.key_file).expanduser()
        if not key_file.is_absolute():
            key_file = (ld.path.parent / key_file).resolve()
        recipients[rid] = dataclasses.replace(r, fingerprint=fpr, key_file=str(key_file),
                                              source=f"{ld.path}: {rwhere}")
    all_recipients.update(recipients)

    ftables = table.get("forms", {})
    if not isinstance(ftables, dict):
        raise ld.fail(f"{prefix}forms", "must hold tables", f"write [{prefix}forms.<id>]")
    fids = []
    for fid, ftable in ftables.items():
        if fid in all_forms:
            raise ld.fail(f"{prefix}forms.{fid}", f"form id {fid!r} is used by "
                          f"{owner(all_forms, fid)} and by {_name(pid)}",
                          "form ids are unique across practices (the URL is /f/<form_id>): "
                          "rename one")
        all_forms[fid] = _build_form(ld, fid, ftable, recipients, smtp, prefix=prefix,
                                     practice=pid)
        fids.append(fid)
    return dataclasses.replace(
        info, timezone=timezone, from_address=sender or f"formrelay@{domain}",
        operator_email=info.operator_email or server.operator_email,
        recipients=tuple(recipients), forms=tuple(fids))


def _url_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:  # not a URL: database_url_problem says so
        return False


def _name(pid: str) -> str:
    return "the default practice" if pid == DEFAULT_PRACTICE else f"practice {pid!r}"


def _check_server(ld: _Loader, server: ServerSettings) -> None:
    problem = database_url_problem(server.database_url)
    if problem:
        raise ld.fail("server.database_url", problem,
                      "write postgresql://USER@HOST:5432/DATABASE, or leave it empty for the "
                      f"SQLite file (or set the URL in {DATABASE_URL_ENV})")
    if not re.match(r"^https?://[^/\s]+", server.base_url):
        raise ld.fail("server.base_url", f"{server.base_url!r} is not a URL",
                      "write e.g. https://forms.example.nl")
    if server.max_request_mb < 1:
        raise ld.fail("server.max_request_mb", "must be at least 1", "e.g. 25")
    for key in ("session_idle_minutes", "session_max_hours", "login_max_failures",
                "login_max_failures_ip", "audit_retention_years", "gpg_timeout_seconds",
                "body_timeout_seconds", "body_min_rate"):
        if getattr(server, key) < 1:
            raise ld.fail(f"server.{key}", "must be at least 1",
                          f"e.g. {key} = {ServerSettings.__dataclass_fields__[key].default}")
    if server.audit_retention_years < 5:  # NEN 7513: the access log is kept 5 years at least
        raise ld.fail("server.audit_retention_years", "must be at least 5 (NEN 7513)",
                      "e.g. audit_retention_years = 5")
    for key, top in (("copy_expiry_days", COPY_MAX_EXPIRY_DAYS),
                     ("copy_downloads", COPY_MAX_DOWNLOADS)):
        if not 1 <= getattr(server, key) <= top:
            raise ld.fail(f"server.{key}", f"must be between 1 and {top}",
                          f"e.g. {key} = {ServerSettings.__dataclass_fields__[key].default}")


REDIS_SCHEMES = ("redis", "rediss")


def redacted_url(uri: str) -> str:
    """`uri` as it may be shown or logged: a password in it replaced by ***."""
    return re.sub(r"^([^:/]*://[^/@:]*:)[^/@]*@", r"\1***@", uri)


def _check_rate_limit_storage(ld: _Loader, uri: str) -> None:
    """Empty (the database file) or a Redis URL: redis://[user@]host[:port][/db]."""
    if not uri:
        return
    key = "server.rate_limit_storage"
    shown = redacted_url(uri)
    fix = ('write e.g. rate_limit_storage = "redis://127.0.0.1:6379/0" (rediss:// for TLS), '
           "or leave it empty to keep the counters in the database file")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ld.fail(key, f"{shown!r} is not a URL ({exc})", fix) from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ld.fail(key, f"{shown!r} is not a Redis URL", fix)
    if parts.password is not None:
        raise ld.fail(key, "secrets are not read from the file",
                      f"remove the password from the URL and set {REDIS_PASSWORD_ENV} in the "
                      "environment")
    if not parts.hostname or port == 0:
        raise ld.fail(key, f"{shown!r} names no host", fix)
    if parts.path not in ("", "/") and not re.fullmatch(r"/\d{1,2}", parts.path):
        raise ld.fail(key, f"{parts.path!r} is not a database number", fix)
    if importlib.util.find_spec("redis") is None:
        raise ld.fail(key, "Redis needs the redis client, which is not installed",
                      "pip install 'formrelay[redis]'")


def _check_timezone(ld: _Loader, key: str, timezone: str) -> None:
    try:
        zone(timezone)
    except ValueError as exc:
        raise ld.fail(key, str(exc),
                      'use an IANA name such as timezone = "Europe/Amsterdam" (the tzdata '
                      "package provides them)") from None


def _check_smtp(ld: _Loader, smtp: SmtpSettings) -> None:
    if smtp.security == "none" and smtp.host and not is_loopback(smtp.host):
        raise ld.fail("smtp.security", f"'none' is refused for {smtp.host}",
                      "use starttls or tls; plain SMTP is only allowed to a loopback relay")
    if smtp.from_address and "@" not in smtp.from_address:
        raise ld.fail("smtp.from_address", f"{smtp.from_address!r} is not an e-mail address",
                      "write the practice's sender address")
    if smtp.lease_seconds <= smtp.timeout_seconds:
        raise ld.fail("smtp.lease_seconds", "must be longer than timeout_seconds",
                      f"e.g. lease_seconds = {max(300, smtp.timeout_seconds * 3)}")
    for key in ("max_message_mb", "retry_seconds", "retry_max_minutes", "give_up_days",
                "timeout_seconds"):
        if getattr(smtp, key) < 1:
            raise ld.fail(f"smtp.{key}", "must be at least 1", "use 1 or more")


def _build_form(ld: _Loader, fid: str, table: Any, recipients: Mapping[str, Recipient],
                smtp: SmtpSettings, *, prefix: str = "", practice: str = DEFAULT_PRACTICE
                ) -> FormSpec:
    where = f"{prefix}forms.{fid}"
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
        if spec.choices_en and spec.type not in CHOICE_TYPES:
            raise ld.fail(f"{fwhere}.choices_en", f"a {spec.type} field has no options",
                          "remove choices_en")
        if spec.choices_en and len(spec.choices_en) != len(spec.choices):
            raise ld.fail(f"{fwhere}.choices_en",
                          f"has {len(spec.choices_en)} options but choices has "
                          f"{len(spec.choices)}",
                          "give one English text per option, in the same order as choices")
        if spec.type == "file":
            bad = [a for a in spec.accept if a.lower() not in UPLOAD_TYPES]
            if bad:
                raise ld.fail(f"{fwhere}.accept", f"{bad[0]!r} is not supported",
                              f"use some of: {', '.join(sorted(UPLOAD_TYPES))}")
        fields.append(spec)
    rest = {k: v for k, v in table.items() if k != "fields"}
    form: FormSpec = ld.build(FormSpec, rest, where, {"id": fid, "fields": tuple(fields),
                                                     "practice": practice})
    if not form.recipients:
        raise ld.fail(f"{where}.recipients", "empty", "name at least one [recipients.<id>]")
    for rid in form.recipients:
        if rid not in recipients:
            known = ", ".join(recipients) or "none defined yet"
            raise ld.fail(f"{where}.recipients", f"unknown recipient {rid!r}",
                          f"add [{prefix}recipients.{rid}] or use one of: {known} (a form "
                          "is sent to recipients of its own practice only)")
    for origin in form.allowed_origins:
        if not re.fullmatch(r"https?://[a-z0-9.-]+(:\d+)?", origin, re.IGNORECASE):
            raise ld.fail(f"{where}.allowed_origins", f"{origin!r} is not an origin",
                          "write scheme and host only, e.g. https://www.praktijk.nl")
    if form.delivery == "email" and not smtp.configured:
        raise ld.fail(f"{where}.delivery", "email needs a mail relay",
                      "configure [smtp] host (or sink_dir), or set delivery = \"hold\"")
    if form.patient_copy and not smtp.configured:
        raise ld.fail(f"{where}.patient_copy", "the copy's link is sent by mail",
                      "configure [smtp] host (or sink_dir), or set patient_copy = false")
    if form.patient_copy_pgp and not form.patient_copy:
        raise ld.fail(f"{where}.patient_copy_pgp", "needs patient_copy = true",
                      "set patient_copy = true, or remove patient_copy_pgp")
    if form.retention_days < 1:
        raise ld.fail(f"{where}.retention_days", "must be at least 1",
                      f"e.g. retention_days = {DEFAULT_RETENTION_DAYS} (held submissions are "
                      "deleted after it)")
    return form


# the declarations themselves (Settings, FormSpec, the *_ENV names...) are settings.py's
__all__ = [
    "ConfigError",
    "KeyFileProblem",
    "load_config",
    "parse_config",
    "practice_files",
    "redacted_url",
]
