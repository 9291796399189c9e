"""The `formrelay` command (also `python -m formrelay`).

Every command takes `--config` (or FORMRELAY_CONFIG). Errors are turned into the
command's answer in one place, `Commands.invoke`: any `FormrelayError` (errors.py) is
one line, "Error: " and its message (a configuration problem names the file, the key
and the fix), with its exit code (1) and no traceback. `check` reports a broken
configuration as one of its own lines instead, with exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import __version__
from ..config import CONFIG_ENV, ConfigError, Settings, load_config
from ..crypto.keyring import KeyRefused
from ..errors import FormrelayError, OperatorError, UserError
from ..localtime import utc_shown

if TYPE_CHECKING:
    from ..services import Services

EXIT_OK, EXIT_WARN, EXIT_ERROR = 0, 1, 2


def one_line(exc: FormrelayError) -> str:
    text = exc.english() if isinstance(exc, UserError) else str(exc)
    return " ".join(text.splitlines())


class Commands(click.Group):
    """The command group every formrelay command runs in (sub-groups included): the
    one place where an error becomes the CLI's answer."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FormrelayError as exc:
            click.ClickException(one_line(exc)).show()  # "Error: ..." on stderr
            ctx.exit(exc.exit_code if isinstance(exc, OperatorError) else 1)


class Context:
    def __init__(self, config: str | None):
        self.config_path = config

    def settings(self) -> Settings:
        path = self.config_path or os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
        return load_config(path, os.environ)

    def serving_settings(self) -> Settings:
        """The settings a serving process (serve, worker) starts with: the files as they
        are, or the last good configuration while they are broken (reload.py)."""
        from ..reload import serving_settings

        path = self.config_path or os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
        return serving_settings(path, os.environ)

    def services(self) -> Services:
        """The store, keyring, relay etc. of the configured data folder (services.py)."""
        from ..services import build

        return build(self.settings())


pass_ctx = click.make_pass_decorator(Context)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", metavar="FILE", help=f"Config file (default: ${CONFIG_ENV}).")
@click.version_option(__version__, prog_name="formrelay")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """formrelay: encrypted intake and contact forms for care practices.

    \b
    Examples:
      formrelay demo
      formrelay --config /etc/formrelay/config.toml check
      formrelay --config config.toml serve --bind 127.0.0.1:8000
    """
    ctx.obj = Context(config)


def _exit(code: int) -> None:
    sys.exit(code)


# -- check ------------------------------------------------------------------------------
@cli.command()
@click.option("--offline", is_flag=True, help="Skip the connection to the mail relay.")
@click.option("--config-only", is_flag=True,
              help="Only load and validate the config file (and practices_dir, and every "
                   "recipient's key file), as a reload does first; touches neither the data "
                   "folder nor the database.")
@pass_ctx
def check(ctx: Context, offline: bool, config_only: bool) -> None:
    """The operator's pre-flight: config, data folder, database, every key's state and
    expiry, the packet gpg writes (SEIPD v1), the mail relay (TLS handshake and
    certificate), the outbox's oldest mail, the clock and the audit chain (the rows
    since the last verification). One line each; exit 0 ok, 1 warning, 2 error, for
    monitoring. With --config-only: whether a reload would take the file (exit 0) or
    keep the old configuration (exit 2); the systemd unit runs it before SIGHUP.

    \b
    Example:
      formrelay --config config.toml check
      formrelay --config config.toml check --offline
      formrelay --config config.toml check --config-only
    """
    from .. import services
    from ..ops.checks import run_checks

    try:
        if config_only:
            from ..reload import validated

            settings = validated(ctx.settings())
            click.echo(f"ok    config {settings.path}: {len(settings.practices)} practice(s), "
                       f"{len(settings.forms)} form(s)")
            _exit(EXIT_OK)
        settings = ctx.settings()
    except ConfigError as exc:  # a broken config is one of check's errors, not a warning
        click.echo(f"error {exc}")
        click.echo("errors")
        _exit(EXIT_ERROR)
    lines, code = run_checks(settings, checks=services.checks(), offline=offline,
                             open_relay=lambda: services.build(settings).relay)
    for level, text in lines:
        click.echo(f"{level:<5} {text}")
    click.echo({EXIT_OK: "ok", EXIT_WARN: "warnings", EXIT_ERROR: "errors"}[code])
    _exit(code)


# -- backup -----------------------------------------------------------------------------
@cli.command()
@click.argument("dest", type=click.Path())
@pass_ctx
def backup(ctx: Context, dest: str) -> None:
    """Copy the database to DEST (a file, or a folder for a dated file) while the service
    keeps running, using SQLite's online backup API. The copy holds ciphertext and
    metadata only; it is checked, then written with mode 0600. Restore: stop the service,
    put the file in the data folder as formrelay.db (remove formrelay.db-wal and -shm),
    start, run `formrelay check`. With server.database_url (PostgreSQL) it refuses:
    back that up with pg_dump.

    \b
    Example:
      formrelay --config config.toml backup /var/backups/formrelay/
    """
    from ..ops.backup import run_backup

    path, counts = run_backup(ctx.settings(), dest)
    click.echo(f"backup {path}: {counts['bytes']} bytes, {counts['submissions']} submissions "
               f"({counts['ciphertexts']} still encrypted in it), {counts['audit_events']} "
               "audit events")


# -- keys -------------------------------------------------------------------------------
@cli.group()
def keys() -> None:
    """Import, list and check the clinicians' public keys.

    \b
    Examples:
      formrelay --config config.toml keys import
      formrelay --config config.toml keys list
      formrelay --config config.toml keys check
    """


@keys.command("import")
@click.argument("recipient", required=False)
@pass_ctx
def keys_import(ctx: Context, recipient: str | None) -> None:
    """Import the key file of RECIPIENT (default: all) after checking it.

    \b
    Example:
      formrelay --config config.toml keys import dr-jansen
    """
    relay = ctx.services().relay
    settings = relay.settings
    ids = [recipient] if recipient else list(settings.recipients)
    failed = False
    for rid in ids:
        r = settings.recipients.get(rid)
        if r is None:
            raise click.ClickException(f"unknown recipient {rid!r}; configured: "
                                       f"{', '.join(settings.recipients) or 'none'}")
        try:
            st = relay.sync_keys()[rid] if r.key_source == "browser" else \
                relay.keyring.import_recipient(r, settings.resolve(r.key_file))
        except KeyRefused as exc:
            click.echo(f"REFUSED {exc}", err=True)
            failed = True
            continue
        click.echo(f"imported {st.line()}")
        failed |= not st.usable
    _exit(EXIT_ERROR if failed else EXIT_OK)


@keys.command("list")
@pass_ctx
def keys_list(ctx: Context) -> None:
    """List each recipient's pinned key: fingerprint, user ids, algorithm, expiry.

    \b
    Example:
      formrelay --config config.toml keys list
    """
    relay = ctx.services().relay
    for rid, st in relay.sync_keys().items():
        r = relay.settings.recipients[rid]
        click.echo(f"{rid} <{r.email}>")
        click.echo(f"  fingerprint {st.fingerprint}")
        for uid in st.uids:
            click.echo(f"  uid         {uid}")
        if st.algorithm:
            click.echo(f"  algorithm   {st.algorithm}")
        exp = f"{st.expires:%Y-%m-%d}" if st.expires else "never"
        click.echo(f"  expires     {exp}")
        click.echo(f"  state       {'usable' if st.usable else 'REFUSED: ' + st.problem}")


@keys.command("check")
@pass_ctx
def keys_check(ctx: Context) -> None:
    """Re-read and check every key file; exit 0 ok, 1 expiring within 30 days, 2 unusable.

    \b
    Example:
      formrelay --config config.toml keys check
    """
    relay = ctx.services().relay
    code = EXIT_OK
    for st in relay.sync_keys().values():
        click.echo(st.line())
        if not st.usable:
            code = EXIT_ERROR
        elif st.warning and code == EXIT_OK:
            code = EXIT_WARN
    _exit(code)


# -- ciphertext -------------------------------------------------------------------------
@cli.command()
@click.argument("reference")
@pass_ctx
def ciphertext(ctx: Context, reference: str) -> None:
    """Print the stored (encrypted) submission REFERENCE, for decryption with gpg.

    \b
    Example:
      formrelay --config config.toml ciphertext FR-7K2M-9QXD | gpg --decrypt
    """
    relay = ctx.services().relay
    try:
        relay.store.submissions.copy_to(reference.upper(), sys.stdout.buffer)
    except KeyError:
        raise click.ClickException(f"no stored ciphertext for {reference}; it may have been "
                                   "delivered and deleted already") from None


# -- serve ------------------------------------------------------------------------------
@cli.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address:port.")
@click.option("--workers", default=2, show_default=True, help="Gunicorn worker processes.")
@click.option("--connections", default=100, show_default=True,
              help="Open connections per worker (gevent); slow clients cost one each.")
@pass_ctx
def serve(ctx: Context, bind: str, workers: int, connections: int) -> None:
    """Run the web service under gunicorn (gevent workers).

    \b
    Example:
      formrelay --config config.toml serve --bind 127.0.0.1:8000 --workers 2
    """
    settings = ctx.serving_settings()
    from ..ops.server import refuse_bad_environment, refuse_without_counters, run_gunicorn

    refuse_bad_environment(os.environ)
    refuse_without_counters(settings)  # Redis not answering: one line, nothing started

    run_gunicorn(settings, bind=bind, workers=workers, connections=connections)


# -- demo -------------------------------------------------------------------------------
@cli.command()
@click.option("--dir", "folder", default="demo", show_default=True, type=click.Path(),
              help="Folder for the throw-away key, config, data and mail.")
@click.option("--port", default=8000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--no-serve", is_flag=True, help="Only prepare the folder, print, and exit.")
def demo(folder: str, port: int, no_serve: bool) -> None:
    """Run everything locally: a throw-away clinician key, a demo config, the service
    on 127.0.0.1 and mail written to a folder; prints the URLs to open.

    \b
    Example:
      formrelay demo --port 8000
    """
    from ..ops.demo import prepare_demo, run_demo

    info = prepare_demo(Path(folder), port)
    for line in info.lines:
        click.echo(line)
    if not no_serve:
        run_demo(info)


@cli.command("decrypt-demo")
@click.option("--dir", "folder", default="demo", show_default=True, type=click.Path(),
              help="The demo folder (its clinician key decrypts).")
@click.argument("message", type=click.File("rb"))
def decrypt_demo(folder: str, message: Any) -> None:
    """Show a demo message as a mail program would: decrypted with the demo's clinician
    key, its text readable (not raw MIME), its attachments named. MESSAGE: a mail from
    the demo's mail folder, or - for `formrelay ciphertext` piped in.

    \b
    Example:
      formrelay decrypt-demo --dir demo demo/mail/FR-7K2M-Q9XD.eml
    """
    from ..ops.demo import readable_mail

    click.echo(readable_mail(Path(folder), message.read()), nl=False)


# -- worker, outbox (delivery) ----------------------------------------------------------
@cli.command()
@click.option("--once", is_flag=True, help="One pass (deliver what is due, check key "
              "expiry), then exit; for cron or tests.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between passes.")
@pass_ctx
def worker(ctx: Context, once: bool, interval: float) -> None:
    """Deliver queued mail from the outbox (retrying with backoff) and mail the operator
    30, 7 and 1 days before a recipient key expires. Stops cleanly on SIGTERM or Ctrl+C;
    several workers (and several hosts sharing the database) may run at once.

    \b
    Example:
      formrelay --config config.toml worker
    """
    import signal
    import threading

    from ..logs import configure_logging
    from ..mail.outbox import check_key_expiry, deliver_pending, run_worker
    from ..reload import Live
    from ..services import build

    built = build(ctx.serving_settings())
    relay, settings = built.relay, built.settings
    configure_logging(settings.server.log_level)  # JSON lines, redacted (logs.py)
    if once:
        result = deliver_pending(settings, relay.store, kinds=built.kinds)
        check_key_expiry(settings, relay.store, relay.sync_keys(), relay.store.clock())
        click.echo(f"sent {result.sent}, deferred {result.deferred}, failed {result.failed}")
        _exit(EXIT_OK if not (result.deferred or result.failed) else EXIT_WARN)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # a changed config file (or SIGHUP) takes effect at the next pass: new practices'
    # senders and operators, new recipients' keys (reload.py)
    live = Live(built, os.environ)
    signal.signal(signal.SIGHUP, lambda *_: live.ask())
    run_worker(settings, relay.store, kinds=built.kinds, purgers=built.purgers, stop=stop,
               interval=interval, key_status=lambda: live.current.relay.sync_keys(),
               settings_now=lambda: live.current.settings)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Also list sent mail (metadata only).")
@click.option("--retry", metavar="ID|REFERENCE", help="Queue a failed mail again, due now.")
@click.option("--retry-failed", is_flag=True,
              help="Queue every failed mail again, due now (e.g. after fixing the relay).")
@pass_ctx
def outbox(ctx: Context, show_all: bool, retry: str | None, retry_failed: bool) -> None:
    """Show the mail queue: what is queued or failed, why, since when, how many attempts
    and the next try. Exit 0 if nothing failed in the last 7 days, else 1. `--retry`
    and `--retry-failed` put failed mail back in the queue (audited); the worker sends it.

    \b
    Examples:
      formrelay --config config.toml outbox
      formrelay --config config.toml outbox --retry FR-7K2M-9QXD
      formrelay --config config.toml outbox --retry-failed
    """
    from datetime import timedelta

    from ..localtime import parse_iso
    from ..mail.outbox import retry as retry_mails

    if retry and retry_failed:
        raise click.UsageError("use --retry ID or --retry-failed, not both")
    relay = ctx.services().relay
    store = relay.store
    if retry_failed:
        mails = retry_mails(store, None)
        for m in mails:
            click.echo(f"#{m.id} {m.kind} {m.reference or '-'} queued again")
        click.echo(f"{len(mails)} failed mail(s) queued again"
                   + ("; `formrelay worker` sends them" if mails else ""))
        return
    if retry:
        mails = retry_mails(store, retry)
        if not mails:
            raise click.ClickException(f"no failed mail with id or reference {retry!r}; see "
                                       "`formrelay outbox`")
        for m in mails:
            click.echo(f"#{m.id} {m.kind} {m.reference} queued again")
        return
    now = store.clock()
    statuses = ("queued", "failed", "sent") if show_all else ("queued", "failed")
    rows = store.outbox.rows(statuses)
    for r in rows:
        since = parse_iso(r["created_at"])
        line = (f"#{r['id']} {r['kind']} {r['reference'] or '-'} (form {r['form_id'] or '-'}): "
                f"{r['status']} since {utc_shown(since)} ({_ago(now - since)}), "
                f"{r['attempts']} attempt(s)")
        if r["status"] == "queued":
            if r["lease_until"] and parse_iso(r["lease_until"]) > now:
                line += ", being sent now"
            else:
                line += f", next try {utc_shown(parse_iso(r['next_attempt_at']))}"
        if r["error"]:
            line += f"\n    why: {r['error']}"
        click.echo(line)
    state = store.outbox.state(now - timedelta(days=7))
    click.echo(f"{state['queued']} queued, {state['failed']} failed in the last 7 days"
               + ("; retry one with `formrelay outbox --retry ID`" if state["failed"] else ""))
    _exit(EXIT_WARN if state["failed"] else EXIT_OK)


def _ago(delta: Any) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // (24 * 60)} days"


# users, audit, purge: the clinician area's commands live in their own module
from .clinician import COMMANDS as _CLINICIAN_COMMANDS  # noqa: E402

for _command in _CLINICIAN_COMMANDS:
    cli.add_command(_command)

# uploads: asking a patient for documents
from .uploads import COMMANDS as _UPLOAD_COMMANDS  # noqa: E402

for _command in _UPLOAD_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="formrelay")


if __name__ == "__main__":
    main()
