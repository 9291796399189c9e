"""The operator's pre-flight: what `formrelay check` reports, line by line.

Each check returns (level, text) lines; the worst level decides the exit code
(0 ok, 1 warning, 2 error) so monitoring can run it. The essentials - data folder,
database, keys, the packet gpg writes, outbox, clock, audit chain - are computed once
here as `Fact`s: `check` prints their text, `/healthz` serves their data (no paths, no
secrets).
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..crypto.keyring import CryptoError
from ..crypto.packets import SEIPD_V1, PacketError, encryption_packet
from ..intake.relay import Relay
from ..localtime import iso, utc_shown, utcnow
from ..settings import DEFAULT_PRACTICE, Settings
from ..store import StoreError, StoreNotWritable

OK, WARN, ERROR = "ok", "warn", "error"
RANK = {OK: 0, WARN: 1, ERROR: 2}
Line = tuple[str, str]
# One check of `formrelay check`: its lines, as of `now`; `run_checks` runs a tuple of
# them in order (services.checks()).
Check = Callable[[Settings, Relay, datetime], list[Line]]

# A mail still queued after this long means delivery is stuck (worker down, relay
# refusing); after the second, patients' messages are hours late.
OUTBOX_WARN_AFTER = timedelta(minutes=30)
OUTBOX_ERROR_AFTER = timedelta(hours=4)
# The database's newest entry may be this far ahead of the clock (other processes).
CLOCK_SLACK = timedelta(minutes=5)
EARLIEST_SANE = datetime(2025, 1, 1, tzinfo=UTC)
# Free space in the data folder: below the first nothing can be stored (a post needs its
# ciphertext twice: a temp file and the database), below the second the operator is warned.
DISK_FULL_BYTES = 1 << 20
DISK_LOW_BYTES = 100 << 20
PROBE = b"formrelay check: which packet does gpg write?\n"
PROBE_CACHE_SECONDS = 3600


@dataclass(frozen=True)
class Fact:
    """One essential: a level, the line for `check`, and the data for /healthz."""

    level: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def line(self) -> Line:
        return (self.level, self.text)


def worst(levels: Any) -> str:
    return max(levels, key=lambda lv: RANK[lv], default=OK)


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} days"


# -- facts ---------------------------------------------------------------------------
def data_folder_fact(settings: Settings) -> Fact:
    """The data folder exists (or can be made), is writable by this user and private.
    Runs before anything opens the database, so its problem is reported plainly."""
    data = settings.data_dir
    fix = (f"create it for the service user, e.g. `install -d -m 700 -o formrelay {data}`, "
           "or set server.data_dir")
    try:
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return Fact(ERROR, f"data folder {data} cannot be created ({exc.strerror}); {fix}",
                    {"writable": False})
    if not data.is_dir():
        return Fact(ERROR, f"data folder {data} is not a folder; {fix}", {"writable": False})
    st = data.stat()
    if os.geteuid() == 0 and st.st_uid != 0:
        # Files root makes there (database journal, gpg keyring) would lock the service out.
        return Fact(ERROR, f"data folder {data} belongs to uid {st.st_uid} but check runs as "
                           "root, which would leave root-owned files there; run it as the "
                           "service user, e.g. `sudo -u formrelay formrelay check`",
                    {"writable": True})
    try:
        with tempfile.NamedTemporaryFile(dir=data, prefix=".check-") as fh:
            fh.write(b"x")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return Fact(ERROR, f"data folder {data} is not writable ({exc.strerror}); give the "
                           "service user ownership (`chown -R formrelay: "
                           f"{data}`) or free disk space", {"writable": False})
    mode = st.st_mode & 0o777
    if mode & 0o077:
        return Fact(WARN, f"data folder {data} can be read by other users (mode {mode:o}); "
                          f"run `chmod 700 {data}`", {"writable": True, "private": False})
    return Fact(OK, f"data folder {data} (mode {mode:o})", {"writable": True, "private": True})


def file_mode_facts(settings: Settings, limit: int = 10) -> list[Fact]:
    """Every file (folder) in the data folder - database, -wal, -shm, lock, the GnuPG
    home, temp files - is 0600 (0700): anything group/world readable is named with its
    fix. formrelay creates them so whatever the umask, but a restore or a hand-made copy
    may not."""
    data = settings.data_dir
    loose: list[tuple[Path, int, bool]] = []
    for folder, dirs, files in os.walk(data):
        for name, is_dir in [(d, True) for d in sorted(dirs)] + [(f, False) for f in sorted(files)]:
            path = Path(folder) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                loose.append((path, st.st_mode & 0o777, is_dir))
    facts = [Fact(WARN, f"{'folder' if is_dir else 'file'} {path} can be read by other users "
                        f"(mode {mode:o}); run `chmod {700 if is_dir else 600} {path}`")
             for path, mode, is_dir in loose[:limit]]
    if len(loose) > limit:
        facts.append(Fact(WARN, f"{len(loose) - limit} more file(s) in {data} can be read by "
                                f"other users; run `chmod -R go-rwx {data}`"))
    return facts


def database_fact(relay: Relay) -> Fact:
    """The database takes a write, and its folder has room for a submission (a full
    disk lets a tiny probe through the write-ahead log but refuses a real post). On
    PostgreSQL: that it takes a write (its disk is the database server's to watch)."""
    path = relay.store.path
    if relay.store.engine.folder is None:  # a database server's disk: not ours to watch
        try:
            relay.store.check_writable()
        except Exception as exc:  # noqa: BLE001 - reported as a line
            return Fact(ERROR, f"database {relay.store.where} is not writable "
                               f"({type(exc).__name__}: {exc})", {"writable": False})
        return Fact(OK, f"database {relay.store.where} (PostgreSQL)", {"writable": True})
    try:
        relay.store.check_writable()
        st = os.statvfs(path.parent)
    except Exception as exc:  # noqa: BLE001 - reported as a line
        return Fact(ERROR, f"database {path} is not writable ({type(exc).__name__}"
                           f": {exc}); check the data folder's owner and free disk space",
                    {"writable": False})
    free = (st.f_bavail if os.geteuid() else st.f_bfree) * st.f_frsize
    mb = free / (1 << 20)
    if free < DISK_FULL_BYTES:
        return Fact(ERROR, f"database {path} is not writable: the disk is full ({mb:.1f} MB "
                           f"free in {path.parent}); free disk space - until then forms answer "
                           "\"temporarily unavailable\"", {"writable": False})
    if free < DISK_LOW_BYTES:
        return Fact(WARN, f"database {path}: only {mb:.0f} MB free in {path.parent}; free "
                          "disk space before it fills up (a full disk stops the forms)",
                    {"writable": True, "free_mb": int(mb)})
    return Fact(OK, f"database {path}", {"writable": True, "free_mb": int(mb)})


_probe_cache: dict[tuple[str, ...], tuple[float, list[Fact]]] = {}
_probe_lock = threading.Lock()


def encryption_facts(relay: Relay, *, cached: bool = False) -> list[Fact]:
    """Encrypt a probe to each usable key and read the packet gpg wrote: SEIPD v1 is
    what every client reads (see crypto/packets.py). One gpg run per key; /healthz caches it."""
    status = relay.key_status()
    usable = sorted(rid for rid, st in status.items() if st.usable)
    cache_key = tuple(status[rid].fingerprint for rid in usable)
    if cached:
        with _probe_lock:
            hit = _probe_cache.get(cache_key)
        if hit and time.monotonic() - hit[0] < PROBE_CACHE_SECONDS:
            return hit[1]
    version = ".".join(str(v) for v in relay.keyring.gpg.version or ())
    facts: list[Fact] = []
    good: list[str] = []
    for rid in usable:
        out = relay.tmp / f"check-probe.{os.getpid()}.{threading.get_ident()}.asc"
        try:
            relay.keyring.encrypt_bytes(PROBE, [status[rid].fingerprint], out)
            packet = encryption_packet(out.read_bytes())
        except (CryptoError, PacketError, OSError) as exc:
            facts.append(Fact(ERROR, f"encryption to {rid} failed: {exc}",
                              {"recipient": rid, "packet": ""}))
            continue
        finally:
            out.unlink(missing_ok=True)
        if packet == SEIPD_V1:
            good.append(rid)
        else:
            facts.append(Fact(ERROR, f"gpg {version} wrote an {packet} packet for {rid}; "
                                     "several mail clients cannot read it - run formrelay with "
                                     "a GnuPG that honours --rfc4880 (2.2, or Debian's 2.4)",
                              {"recipient": rid, "packet": packet}))
    if good:
        facts.insert(0, Fact(OK, f"gpg {version} writes {SEIPD_V1} (readable by every client) "
                                 f"for {', '.join(good)}",
                             {"gnupg": version, "packet": SEIPD_V1, "recipients": good}))
    if all(f.level != ERROR for f in facts):  # a failure (disk full) is probed again
        with _probe_lock:
            _probe_cache[cache_key] = (time.monotonic(), facts)
    return facts


def outbox_fact(relay: Relay, now: datetime) -> Fact:
    state = relay.store.outbox.state(now - timedelta(hours=24))
    queued, oldest, failed = state["queued"], state["oldest"], state["failed"]
    age = now - oldest if oldest else timedelta(0)
    data = {"queued": queued, "oldest_age_seconds": int(age.total_seconds()),
            "failed_24h": failed, "error_class": state["error_class"]}
    last = f"; last error: {state['error']}" if state["error"] else ""
    if failed:
        return Fact(ERROR, f"outbox: {failed} mail(s) failed for good in the last 24 hours"
                           f"{last}; see `formrelay outbox`", data)
    if not queued:
        return Fact(OK, "outbox empty", data)
    text = f"outbox: {queued} mail(s) waiting, the oldest since {utc_shown(oldest)} " \
           f"({_age(age)}){last}"
    if age >= OUTBOX_ERROR_AFTER:
        return Fact(ERROR, f"{text}; is `formrelay worker` running and the relay reachable?",
                    data)
    if age >= OUTBOX_WARN_AFTER:
        return Fact(WARN, f"{text}; is `formrelay worker` running?", data)
    return Fact(OK, text, data)


def clock_fact(relay: Relay, now: datetime) -> Fact:
    newest = relay.store.backups.newest_timestamp()
    data = {"now": iso(now)}
    fix = "fix the system clock (NTP: `timedatectl set-ntp true`); key expiry, link " \
          "lifetimes and the audit log depend on it"
    if now < EARLIEST_SANE:
        return Fact(ERROR, f"clock says {utc_shown(now)}, which cannot be right; {fix}",
                    {**data, "ok": False})
    if newest and newest - now > CLOCK_SLACK:
        return Fact(ERROR, f"clock is {_age(newest - now)} behind the newest database entry "
                           f"({utc_shown(newest)}); {fix}", {**data, "ok": False})
    return Fact(OK, f"clock {utc_shown(now)}", {**data, "ok": True})


def audit_fact(relay: Relay) -> Fact:
    """The audit chain, verified from the last verified row on (fast on a log of years;
    `formrelay audit verify` checks every row)."""
    from .audit import verify

    try:
        result = verify(relay.store, incremental=True, record=True)
    except StoreNotWritable:  # the chain reads fine; the database fact reports the disk
        result = verify(relay.store, incremental=True)
    data = {"ok": result.ok}  # /healthz is public: not how many events there are
    if not result.ok:
        more = f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
        return Fact(ERROR, f"audit log: {result.problems[0]}{more}; the log was tampered with "
                           "or damaged - run `formrelay audit verify` and keep the database "
                           "file as evidence", data)
    since = f" since #{result.since_id} (verified {result.since_at[:16].replace('T', ' ')})" \
        if result.since_id else ""
    return Fact(OK, f"audit log intact up to #{result.head_id} ({result.rows} row(s) "
                    f"checked{since})", data)


# -- the checks `formrelay check` runs (their order is in services.checks()) -----------
def config(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    s = settings.server
    lines: list[Line] = []
    if len(settings.practices) > 1:
        lines.append((OK, "practices: " + ", ".join(
            f"{p.id} ({', '.join(p.forms) or 'no forms'})"
            for p in settings.practices.values())))
    if not settings.is_local:
        if not s.base_url.startswith("https://"):
            lines.append((ERROR, f"server.base_url {s.base_url} is not https; patients' "
                                 "answers must only travel over HTTPS - put the TLS proxy in "
                                 "front and write https://"))
        elif not s.trusted_proxies:
            lines.append((WARN, "server.trusted_proxies is 0 while base_url is https: behind "
                                "a proxy (Caddy, nginx) set it to 1, or client addresses and "
                                "HSTS are wrong"))
        for p in settings.practices.values():
            if settings.smtp.host and not p.operator_email:
                where = "server.operator_email" if p.id == DEFAULT_PRACTICE else \
                    f"practices.{p.id}.operator_email"
                lines.append((WARN, f"{where} is empty: nobody is told about expiring "
                                    "keys or stuck mail"))
    return lines


def database(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    return [database_fact(relay).line]


def rate_limit_fact(settings: Settings, storage: Any) -> Fact:
    """Where the posts' rate-limit counters live, and whether Redis answers (`storage`:
    the app's limits storage, or one opened for `formrelay check`)."""
    from ..intake import ratelimit

    if not settings.server.rate_limit_storage:
        return Fact(OK, "rate limits: counted in the database file (shared by this "
                        "machine's worker processes)", {"redis": False})
    why = ratelimit.problem(storage)
    if why:
        return Fact(ERROR, ratelimit.unreachable(settings, why), {"redis": True,
                                                                  "answers": False})
    return Fact(OK, f"rate limits: counted in {ratelimit.describe(settings)} (shared by every "
                    "app instance)", {"redis": True, "answers": True})


def rate_limits(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    from ..intake import ratelimit

    storage = None
    if settings.server.rate_limit_storage:
        storage = ratelimit.open_storage(settings)
    return [rate_limit_fact(settings, storage).line]


def keys(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    lines: list[Line] = []
    for st in relay.sync_keys().values():
        level = ERROR if not st.usable else WARN if st.warning else OK
        lines.append((level, "key " + st.line()))
    for spec in settings.forms.values():
        problems = relay.form_problems(spec)
        if problems:
            lines.append((ERROR, f"form {spec.id} is unavailable to patients until its keys "
                                 "are fixed"))
        else:
            lines.append((OK, f"form {spec.id} ({spec.delivery})"))
    return lines


def encryption(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    return [f.line for f in encryption_facts(relay)]


def mail_relay(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    return [smtp_fact(settings).line]


def outbox(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    return [outbox_fact(relay, now).line]


def clock(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    return [clock_fact(relay, now).line]


def audit_log(settings: Settings, relay: Relay, now: datetime) -> list[Line]:
    return [audit_fact(relay).line]


OFFLINE_SKIPS = {"mail_relay"}


def smtp_fact(settings: Settings) -> Fact:
    """Connect to the relay: TLS handshake, certificate check, login - then quit."""
    from ..mail.transport import MailError, probe

    smtp = settings.smtp
    uses_mail = any(f.delivery == "email" for f in settings.forms.values())
    if settings.sink_path is not None:
        level = OK if settings.is_local else WARN
        return Fact(level, f"mail is written to {settings.sink_path} (sink_dir), "
                           "not sent - for demos and tests only", {"sink": True})
    if not smtp.host:
        level = ERROR if uses_mail else OK
        return Fact(level, "smtp: no relay configured" + (
            "" if not uses_mail else "; forms with delivery = \"email\" need [smtp] host"), {})
    try:
        text = probe(settings)
    except MailError as exc:
        hint = {
            "relay does not offer STARTTLS": "use port 465 with security = \"tls\", or ask the "
                                             "provider for STARTTLS",
            "relay certificate not trusted": "fix the relay's certificate, or set smtp.ca_file "
                                             "for a private CA",
            "relay refused the login": "check smtp.username and FORMRELAY_SMTP_PASSWORD",
        }.get(getattr(exc, "error_class", ""), "check smtp.host, smtp.port and the firewall")
        return Fact(ERROR, f"smtp: {exc}; nothing is sent in clear - mail stays queued until "
                           f"this is fixed: {hint}", {"reachable": False})
    return Fact(OK, f"smtp: {text}", {"reachable": True})


# -- running them --------------------------------------------------------------------
def run_checks(settings: Settings, now: datetime | None = None, *, checks: tuple[Check, ...],
               open_relay: Callable[[], Relay], offline: bool = False
               ) -> tuple[list[Line], int]:
    """The lines of `checks`, in order, after the config and data-folder lines, and the
    exit code their worst level means. `open_relay` gives the relay as the app has it
    (every step); it is called only once the data folder is known to be usable."""
    now = now or utcnow()
    lines: list[Line] = [(OK, f"config {settings.path}")]
    folder = data_folder_fact(settings)
    lines.append(folder.line)
    if folder.level == ERROR:  # nothing else can be checked without it
        return lines, RANK[ERROR]
    # before opening: opening the database and keyring makes formrelay's own files 0600
    lines.extend(f.line for f in file_mode_facts(settings))
    try:
        relay = open_relay()
    except (StoreError, CryptoError, OSError) as exc:
        lines.append((ERROR, str(exc)))
        return lines, RANK[ERROR]
    try:
        for fn in checks:
            if offline and fn.__name__ in OFFLINE_SKIPS:
                continue
            try:
                lines.extend(fn(settings, relay, now))
            except (OSError, StoreError, CryptoError) as exc:
                lines.append((ERROR, f"{fn.__name__.replace('_', ' ')}: {exc}"))
    finally:
        relay.store.close()
    return lines, RANK[worst(lv for lv, _ in lines)]


def _guarded(name: str, make: Callable[[], Fact | list[Fact]]) -> Fact | list[Fact]:
    """One essential; if computing it fails (a full disk refusing the audit record, gpg
    gone), that essential is an error, and /healthz still answers."""
    try:
        return make()
    except Exception as exc:  # noqa: BLE001 - reported as the essential's state
        return Fact(ERROR, f"{name.replace('_', ' ')}: {type(exc).__name__}: {exc}",
                    {"error": type(exc).__name__})


def essentials(relay: Relay, now: datetime, counters: Any = None
               ) -> tuple[str, dict[str, Any]]:
    """What /healthz serves to the operator (with its token): the worst level and each
    essential's data (no paths, no secrets, no network calls but a PING to Redis when
    the app's rate-limit `counters` are there; the encryption probe is cached for an
    hour). `public_health` reduces it to what anyone may see."""
    facts: dict[str, Fact | list[Fact]] = {
        "data_folder": _guarded("data_folder", lambda: data_folder_fact(relay.settings)),
        "database": _guarded("database", lambda: database_fact(relay)),
        "encryption": _guarded("encryption", lambda: encryption_facts(relay, cached=True)),
        "outbox": _guarded("outbox", lambda: outbox_fact(relay, now)),
        "clock": _guarded("clock", lambda: clock_fact(relay, now)),
        "audit": _guarded("audit", lambda: audit_fact(relay)),
    }
    if counters is not None and relay.settings.server.rate_limit_storage:
        facts["rate_limits"] = _guarded("rate_limits",
                                        lambda: rate_limit_fact(relay.settings, counters))
    out: dict[str, Any] = {}
    levels: list[str] = []
    for name, fact in facts.items():
        items = fact if isinstance(fact, list) else [fact]
        level = worst(f.level for f in items)
        levels.append(level)
        merged: dict[str, Any] = {"level": level}
        for f in items:
            merged.update(f.data)
        out[name] = merged
    keys: dict[str, Any] = {}
    try:
        statuses = relay.key_status()
    except Exception as exc:  # noqa: BLE001 - gpg itself failed: every key is unusable
        statuses = {}
        keys["_error"] = {"level": ERROR, "usable": False, "problem": type(exc).__name__}
        levels.append(ERROR)
    for rid, st in statuses.items():
        level = ERROR if not st.usable else WARN if st.warning else OK
        keys[rid] = {"level": level, "usable": st.usable, "problem": st.problem,
                     "warning": st.warning,
                     "expires": st.expires.date().isoformat() if st.expires else None}
    out["keys"] = keys
    out["practices"] = practice_keys(relay.settings, keys)
    levels.append(keys_level(keys, out["practices"]))
    return worst(levels), out


def practice_keys(settings: Settings, keys: dict[str, Any]) -> dict[str, Any]:
    """Each practice's keys: its level (the worst of its recipients') and the recipients
    whose key is unusable. One practice's broken key is that practice's error."""
    out: dict[str, Any] = {}
    for p in list(settings.practices.values()) or [settings.default_practice]:
        mine = [rid for rid in p.recipients if rid in keys]
        out[p.id] = {"level": worst(keys[rid]["level"] for rid in mine),
                     "unusable": [rid for rid in mine if not keys[rid]["usable"]]}
    return out


def keys_level(keys: dict[str, Any], practices: dict[str, Any]) -> str:
    """The keys' level for the whole instance: an error when gpg itself failed or no
    practice has its keys usable; a warning when some practice has a problem (its forms
    are unavailable, the others serve: a monitor must not see the whole instance down)."""
    if "_error" in keys:
        return ERROR
    levels = [p["level"] for p in practices.values()] or [OK]
    if all(lv == ERROR for lv in levels):
        return ERROR
    return WARN if any(lv != OK for lv in levels) else OK


# What anyone may read at /healthz: each essential's level, and for an error one fixed
# phrase - never a path, fingerprint, address, date or exception text.
PUBLIC_PROBLEMS = {
    "data_folder": "data folder not writable",
    "database": "database not writable",
    "keys": "a recipient key is unusable",
    "encryption": "encryption probe failed",
    "outbox": "mail delivery stuck",
    "clock": "clock wrong",
    "audit": "audit log damaged",
    "rate_limits": "rate-limit counters unreachable",
}


def public_health(level: str, checks: dict[str, Any]) -> dict[str, Any]:
    """`essentials` without details: {"ok", "status", "checks": {name: level},
    "problems": [fixed phrases]}."""
    states: dict[str, str] = {}
    for name, data in checks.items():
        if name == "practices":
            continue  # the keys per practice: their level is the keys' state
        if name == "keys":
            states[name] = keys_level(data, checks.get("practices", {}))
        else:
            states[name] = data["level"]
    problems = [PUBLIC_PROBLEMS[n] for n, lv in states.items() if lv == ERROR]
    return {"ok": level != ERROR, "status": level, "checks": states, "problems": problems}
