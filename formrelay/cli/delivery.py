"""`formrelay worker` and `formrelay outbox`: delivering the queued mail (ops/worker.py,
mail/outbox.py) and showing or retrying what is queued or failed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..localtime import utc_shown
from .common import EXIT_OK, EXIT_WARN, Context, pass_ctx


@click.command()
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
    from ..mail.outbox import deliver_pending
    from ..mail.reminders import check_key_expiry
    from ..ops.worker import run_worker
    from ..reload import Live
    from ..services import build

    built = build(ctx.serving_settings())
    relay, settings = built.relay, built.settings
    configure_logging(settings.server.log_level)  # JSON lines, redacted (logs.py)
    if once:
        result = deliver_pending(settings, relay.store, kinds=built.kinds)
        check_key_expiry(settings, relay.store, relay.sync_keys(), relay.store.clock())
        click.echo(f"sent {result.sent}, deferred {result.deferred}, failed {result.failed}")
        sys.exit(EXIT_OK if not (result.deferred or result.failed) else EXIT_WARN)
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


@click.command()
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
    sys.exit(EXIT_WARN if state["failed"] else EXIT_OK)


def _ago(delta: Any) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // (24 * 60)} days"


COMMANDS: list[click.Command] = [worker, outbox]
