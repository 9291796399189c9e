"""Benchmark of the encrypted submission path (issues 2 and 17).

    .venv/bin/python bench/bench_intake.py                 # about 8 minutes
    .venv/bin/python bench/bench_intake.py --quick         # about 4 minutes
    .venv/bin/python bench/bench_intake.py --quick --profile --rounds 2

In one run it starts, each under gunicorn with the options of `formrelay serve`
(`formrelay.ops.server.run_gunicorn`, which deploy/gunicorn.conf.py also uses: gevent,
2 workers unless told otherwise), so a server change moves both:

* formrelay itself (`formrelay.create_app(config)`) with a temp config, a throw-away
  curve key (like `formrelay demo` and the tests make) and a form of ~5 KB of answers;
* a plain Flask endpoint that stores the same answers *unencrypted* in SQLite with the
  same durability (WAL, synchronous=FULL, one transaction per post).

It drives both, interleaved, with 1, 8, 16 and 64 concurrent clients from a separate
load process on 127.0.0.1 (`_loadgen.py`), and reports submissions/s, p50 and p99
latency of `POST /f/<form_id>` (`Accept: application/json`), the ratio to the plain
endpoint and the server's CPU time per post (gunicorn master + workers + the gpg they
ran). `--rounds N` repeats that table N times in the same run (the machine is noisy:
compare formrelay with the plain form of the same round).

The form token is single-use, so every post needs a form shown by a GET of its own. In
the main table each client fetches its forms before the clock starts and only the posts
are timed: what the issue asks for. Then, at 16 clients:

* a patient's whole step, GET then POST;
* the posts while 16 connections trickle a POST body (one byte a second) and 8 send
  nothing, from another address, and a third address GETs the form page in a loop:
  the GETs answered and timed out say whether slow clients starve the form;
* with `--profile`, a run with py-spy (PyPI `py-spy`) sampling both formrelay workers:
  where a post's CPU goes (bench/_profile.py groups the stacks);
* formrelay on PostgreSQL (a throw-away server, tests/pg.py; `--no-postgres` skips it)
  with 1 and 2 instances sharing the database, at 1, 8, 16 and 64 clients, beside the
  plain form's numbers from the same run.

Last, a fresh formrelay server takes one 20 MB upload (on a "hold" form: 20 MB is over
the mail size limit) and the worker's peak resident set (VmHWM in /proc/<pid>/status) is
read before and after.

What the bench form changes from the defaults, and why: `min_fill_seconds = 0` (the
load posts faster than any patient fills a form) and rate limits far above the load
(`rate_limit_ip`, `rate_limit_form`) so that nothing is refused; the rate-limit
counters still run in their default storage (the database), so their cost is measured.
Everything else is the production default: delivery by e-mail (the ciphertext is
committed with its outbox entry; no delivery worker runs), log level INFO, the access
log on (into a file).

The machine may be shared: the "other CPU" column says how busy the rest of the machine
was during each run, in CPUs; more than ~0.2 skews the rates and latencies. The server's
CPU time per post is much less sensitive to that, so "ceiling/s" also gives the rate
that CPU cost allows on idle CPUs (a bound, not a measurement).

Targets (issue 17): >= 250 submissions/s and p99 <= 150 ms at 16 clients, >= 0.6x the
plain endpoint; a 20 MB upload adds <= 50 MB RSS; the form keeps answering GETs while
slow clients hold connections.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    Server,
    cpu_busy_seconds,
    free_port,
    kill_agents,
    machine,
    make_key,
    percentile,
    proc_status_kb,
    run_load,
    start_server,
    table,
    tree_cpu_seconds,
)

FORM, UPLOAD_FORM = "bench", "upload"
LEVELS = (1, 8, 16, 64)
SLOW, IDLE = 16, 8  # trickling and silent connections during the slow-client run
TARGET_RATE, TARGET_P99_MS, TARGET_RATIO, TARGET_RSS_MB = 250, 150, 0.6, 50
UPLOAD_MB = 20

_SENTENCES = [
    "Sinds drie weken heb ik pijn in mijn rechterknie, vooral bij het traplopen. ",
    "’s Ochtends is de knie stijf en na het fietsen wordt hij dik. ",
    "Ik heb paracetamol geprobeerd (500 mg, drie keer per dag) maar dat helpt weinig. ",
    "Vorig jaar ben ik geopereerd aan mijn meniscus in het ziekenhuis in Zwolle. ",
    "Mijn huisarts, dokter Brünhilde, adviseerde fysiotherapie en rust. ",
]


def prose(chars: int) -> str:
    out, i = "", 0
    while len(out) < chars:
        out += _SENTENCES[i % len(_SENTENCES)]
        i += 1
    return out[:chars].strip()


ANSWERS = {
    "name": "Jeroen van den Bergh-Çelik",
    "email": "jeroen.vandenbergh@example.nl",
    "phone": "06 1234 5678",
    "born": "1978-04-23",
    "insurer": "Zilveren Kruis",
    "symptoms": "pijn",
    "complaint": prose(2600),
    "history": prose(1500),
    "medication": prose(700),
    "consent": "y",
}

FIELDS = """\
[[forms.{form}.fields]]
name = "name"
type = "text"
label = "Naam"
required = true

[[forms.{form}.fields]]
name = "email"
type = "email"
label = "E-mailadres"

[[forms.{form}.fields]]
name = "phone"
type = "tel"
label = "Telefoon"

[[forms.{form}.fields]]
name = "born"
type = "birthdate"
label = "Geboortedatum"

[[forms.{form}.fields]]
name = "insurer"
type = "select"
label = "Verzekeraar"
choices = ["Zilveren Kruis", "VGZ", "CZ", "Menzis", "Anders"]

[[forms.{form}.fields]]
name = "symptoms"
type = "checkboxes"
label = "Klachten"
choices = ["pijn", "zwelling", "stijfheid"]

[[forms.{form}.fields]]
name = "complaint"
type = "textarea"
label = "Uw klacht"
required = true

[[forms.{form}.fields]]
name = "history"
type = "textarea"
label = "Voorgeschiedenis"

[[forms.{form}.fields]]
name = "medication"
type = "textarea"
label = "Medicatie"

[[forms.{form}.fields]]
name = "attachment"
type = "file"
label = "Verwijsbrief"
accept = ["pdf"]
max_size_mb = {upload_mb}

[[forms.{form}.fields]]
name = "consent"
type = "consent"
label = "Ik ga akkoord met de verwerking van mijn gegevens."
"""


def config_toml(data: Path, key: Path, fpr: str, port: int) -> str:
    origin = f"http://127.0.0.1:{port}"
    forms = ""
    for form, delivery in ((FORM, "email"), (UPLOAD_FORM, "hold")):
        forms += f"""
[forms.{form}]
title = "Intake fysiotherapie"
recipients = ["clinician"]
delivery = "{delivery}"
allowed_origins = ["{origin}"]

""" + FIELDS.format(form=form, upload_mb=UPLOAD_MB + 2)
    return f"""\
[server]
base_url = "{origin}"
data_dir = "{data}"
practice_name = "Praktijk Benchmark"
practice_phone = "020 555 0101"
# The bench posts far faster than any patient: no minimum fill time, no rate limit
# in reach (the counters still run, in their default storage).
min_fill_seconds = 0
rate_limit_ip = "1000000/minute"
rate_limit_form = "100000000/hour"

[smtp]
from_address = "formulieren@praktijk.test"
sink_dir = "{data.parent / 'mail'}"

[recipients.clinician]
email = "clinician@praktijk.test"
key_file = "{key}"
fingerprint = "{fpr}"
""" + forms


def load_spec(server: Server, clients: int, duration: float, **extra: Any) -> dict[str, Any]:
    form = extra.pop("form", FORM)
    return {"port": server.port, "path": f"/f/{form}", "clients": clients,
            "duration": duration, "max_requests": 50_000, "fields": ANSWERS,
            "fetch_form": server.name == "formrelay", "prefetch": 0,
            "origin": f"http://127.0.0.1:{server.port}", **extra}


def measure(server: Server, clients: int, duration: float, warmup: float,
            prefetch: int = 0, also: Any = None) -> dict[str, Any]:
    """One load level. Counts the posts that end inside [warmup, duration]; `cpu` is the
    server's CPU per post (all posts), `other` the rest of the machine's load in CPUs.
    `also` is called when the clock starts (the profiler, the slow clients' probe)."""
    start: dict[str, float] = {}

    def on_start() -> None:
        start["tree"], start["busy"] = tree_cpu_seconds(server.proc.pid), cpu_busy_seconds()
        if also is not None:
            also()

    spec = load_spec(server, clients, duration, prefetch=prefetch,
                     fetch_form=server.name == "formrelay" or not prefetch)
    out = run_load(spec, timeout=duration + 900, on_start=on_start)
    tree = tree_cpu_seconds(server.proc.pid) - start["tree"]
    other = cpu_busy_seconds() - start["busy"] - tree - out["cpu"]
    samples = out["samples"]
    window = [(lat, st) for s, lat, st in samples if warmup <= s + lat <= duration]
    ok = [lat for lat, st in window if st == 200]
    failed = Counter(st for *_, st in samples if st != 200)
    if failed:
        print(f"  {server.name}, {clients} clients: failed posts by HTTP status (0 = no "
              f"answer): {dict(failed)}")
        lines = server.log.read_text(errors="replace").splitlines()
        for line in [ln for ln in lines if '"error"' in ln or "Error" in ln][-3:]:
            print(f"    {line[:300]}")
    return {"rate": len(ok) / (duration - warmup), "p50": percentile(ok, 50) * 1000,
            "p99": percentile(ok, 99) * 1000, "n": len(ok), "errors": sum(failed.values()),
            "cpu": tree / max(1, len(samples)) * 1000, "other": other / out["elapsed"],
            "inline_gets": out["inline_gets"], "resent": out.get("resent", 0)}


def upload_rss(server: Server) -> dict[str, Any]:
    """Peak RSS of the workers before and after one 20 MB upload (after a warm-up)."""
    run_load(load_spec(server, 1, 60, max_requests=10, form=UPLOAD_FORM), timeout=300)
    before = {pid: proc_status_kb(pid, "VmHWM") for pid in server.worker_pids()}
    rss = {pid: proc_status_kb(pid, "VmRSS") for pid in before}
    up = run_load(load_spec(server, 1, 120, max_requests=1, form=UPLOAD_FORM,
                            upload=["attachment", "verwijsbrief.pdf", UPLOAD_MB << 20]),
                  timeout=300)
    after = {pid: proc_status_kb(pid, "VmHWM") for pid in before}
    pid = max(before, key=lambda p: after[p] - before[p])
    (_, latency, status), = up["samples"]
    return {"status": status, "seconds": latency, "rss_before": rss[pid] / 1024,
            "hwm_before": before[pid] / 1024, "hwm_after": after[pid] / 1024,
            "added": (after[pid] - before[pid]) / 1024}


def row(label: Any, f: dict[str, Any], p: dict[str, Any]) -> list[Any]:
    return [label, f"{f['rate']:.0f}", f"{f['p50']:.1f}", f"{f['p99']:.1f}", f"{f['cpu']:.1f}",
            f["errors"], f"{p['rate']:.0f}", f"{p['p50']:.1f}", f"{p['p99']:.1f}",
            f"{p['cpu']:.1f}", p["errors"], f"{f['rate'] / p['rate']:.2f}x",
            f"{CPUS * 1000 / f['cpu']:.0f} / {CPUS * 1000 / p['cpu']:.0f}",
            f"{max(f['other'], p['other']):.2f}"]


CPUS = os.cpu_count() or 1
HEADERS = ["clients", "formrelay/s", "p50 ms", "p99 ms", "CPU ms", "errors", "plain/s",
           "p50 ms", "p99 ms", "CPU ms", "errors", "ratio", "ceiling/s", "other CPU"]


def under_slow_clients(server: Server, duration: float, warmup: float,
                       prefetch: int) -> dict[str, Any]:
    """16 clients post while SLOW connections trickle a body and IDLE ones send nothing
    (from 127.0.0.5), and one client on 127.0.0.2 GETs the form page in a loop."""
    from bench.bench_slow import attack, probe

    stop = threading.Event()
    attacker = threading.Thread(target=attack, args=(server.port, SLOW, IDLE, stop, FORM),
                                daemon=True)
    attacker.start()
    time.sleep((SLOW + IDLE) * 0.05 + 0.5)  # every slow connection is open
    gets: dict[str, int] = {}

    def start_probe() -> None:
        def run() -> None:
            gets["ok"], gets["failed"] = probe(server.port, duration, FORM)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        gets_thread.append(t)

    gets_thread: list[threading.Thread] = []
    try:
        out = measure(server, 16, duration, warmup, prefetch, also=start_probe)
    finally:
        for t in gets_thread:
            t.join(timeout=duration + 30)
            if t.is_alive() or "ok" not in gets:
                print("  the GET probe did not finish", flush=True)
        stop.set()
        attacker.join(timeout=30)
    return {**out, "gets": gets.get("ok", 0) / duration, "get_failed": gets.get("failed", 0)}


def profiled(server: Server, duration: float, warmup: float, prefetch: int,
             folder: Path) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """A 16-client run with py-spy sampling every worker for its whole duration."""
    from bench import _profile

    started: list[Any] = []

    def begin() -> None:
        started.extend(_profile.record(server.worker_pids(), duration, folder))

    out = measure(server, 16, duration, warmup, prefetch, also=begin)
    return out, _profile.breakdown(_profile.wait(started, timeout=duration + 60))


def on_postgres(root: Path, key: Path, fpr: str, port: int, duration: float, warmup: float,
                gun: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """formrelay on PostgreSQL with 1 and 2 instances (bench_scale's layouts: the same
    config as the main run but for the database and the data folder)."""
    from bench.bench_scale import Setup, pg_pid, with_database
    from bench.bench_scale import measure as measure_setup
    from tests.pg import PgServer

    out: list[tuple[str, int, dict[str, Any]]] = []
    pg = PgServer()
    setups: list[Setup] = []
    try:
        origin = f"http://127.0.0.1:{port}"
        for name, n in (("PostgreSQL, 1 instance", 1), ("PostgreSQL, 2 instances", 2)):
            url = pg.new_database()
            servers = []
            for i in range(n):
                folder = root / f"pg{n}-{i}"
                folder.mkdir()
                cfg = folder / "config.toml"
                cfg.write_text(with_database(config_toml(folder / "data", key, fpr, port), url),
                               encoding="utf-8")
                servers.append(start_server("formrelay", cfg, root, **gun))
            setups.append(Setup(name, servers, url=url, origin=origin, pg=pg_pid(pg)))
        best = 100.0
        for n in LEVELS:
            prefetch = int(best * 2 * (duration + 1) / n) + 10
            for setup in setups:
                if n < len(setup.servers):  # every instance gets at least one client
                    continue
                r = measure_setup(setup, n, duration, warmup, prefetch)
                best = max(best, r["rate"])
                out.append((setup.name, n, r))
                print(f"  {setup.name}, {n:>2} clients: {r['rate']:.0f}/s, p99 "
                      f"{r['p99']:.0f} ms", flush=True)
    finally:
        for setup in setups:
            for server in setup.servers:
                server.stop()
        pg.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (4 s per level)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    ap.add_argument("--connections", type=int, default=100,
                    help="connections per worker (default 100)")
    ap.add_argument("--duration", type=float, help="seconds per level (default 10, quick 4)")
    ap.add_argument("--max-requests", type=int, help="recycle workers after this many "
                    "requests (default: as `formrelay serve`; 0 = never)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the main table (default 1)")
    ap.add_argument("--profile", nargs="?", const="", metavar="FOLDER",
                    help="where the CPU goes at 16 clients (py-spy); keeps py-spy's folded "
                         "stacks in FOLDER when given")
    ap.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL runs")
    args = ap.parse_args(argv)
    duration = args.duration or (4.0 if args.quick else 10.0)
    warmup = 1.0 if args.quick else 2.0
    gun = {"workers": args.workers, "connections": args.connections,
           "max_requests": args.max_requests}

    print(f"formrelay intake benchmark: {machine()}")
    recycle = "" if args.max_requests is None else f", max_requests {args.max_requests}"
    print(f"gunicorn gevent, {args.workers} workers x {args.connections} connections{recycle}; "
          f"{duration:g} s per run, the first {warmup:g} s not counted")
    rounds: list[dict[int, dict[str, dict[str, Any]]]] = []
    pg_rows: list[tuple[str, int, dict[str, Any]]] = []
    shares: list[tuple[str, float]] = []
    prof: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="formrelay-bench-") as tmp:
        root = Path(tmp)
        fpr, key = make_key(root)
        servers: list[Server] = []
        try:
            port = free_port()
            cfg = root / "config.toml"
            cfg.write_text(config_toml(root / "data", key, fpr, port), encoding="utf-8")
            fr = start_server("formrelay", cfg, root, port=port, **gun)
            plain = start_server("plain", cfg, root, **gun)
            servers += [fr, plain]
            size = sum(len(v.encode()) for v in ANSWERS.values())
            print(f"answers per post: {size} bytes in {len(ANSWERS)} fields\n")
            best = 100.0
            for r in range(args.rounds):
                results: dict[int, dict[str, dict[str, Any]]] = {}
                for n in LEVELS:
                    # forms for the whole run, fetched before the clock starts
                    prefetch = int(best * 2 * (duration + 1) / n) + 10
                    f = measure(fr, n, duration, warmup, prefetch)
                    p = measure(plain, n, duration, warmup, prefetch)
                    best = max(best, f["rate"])
                    results[n] = {"formrelay": f, "plain": p}
                    notes = [f"{f['inline_gets']} forms fetched inline"] if f["inline_gets"] \
                        else []
                    if f["resent"] + p["resent"]:
                        notes.append(f"{f['resent'] + p['resent']} requests resent on a fresh "
                                     f"connection (the server had closed the kept-alive one)")
                    print(f"  round {r + 1}, {n:>2} clients: formrelay {f['rate']:.0f}/s, "
                          f"plain {p['rate']:.0f}/s"
                          + (f" ({'; '.join(notes)})" if notes else ""), flush=True)
                rounds.append(results)
            prefetch = int(best * 2 * (duration + 1) / 16) + 10
            flow = {name: measure(s, 16, duration, warmup)
                    for name, s in (("formrelay", fr), ("plain", plain))}
            print(f"  16 clients, GET + POST: formrelay {flow['formrelay']['rate']:.0f}/s, "
                  f"plain {flow['plain']['rate']:.0f}/s", flush=True)
            slow = {"formrelay": under_slow_clients(fr, duration, warmup, prefetch),
                    "plain": measure(plain, 16, duration, warmup, prefetch)}
            print(f"  16 clients with {SLOW} trickling + {IDLE} idle connections: formrelay "
                  f"{slow['formrelay']['rate']:.0f}/s, form GETs {slow['formrelay']['gets']:.0f}"
                  f"/s ({slow['formrelay']['get_failed']} timed out)", flush=True)
            if args.profile is not None:
                folder = Path(args.profile) if args.profile else root / "profile"
                prof, shares = profiled(fr, duration, warmup, prefetch, folder)
                prof["plain"] = measure(plain, 16, duration, warmup, prefetch)
            for s in servers:
                s.stop()
            servers.clear()

            if not args.no_postgres:
                pg_rows = on_postgres(root, key, fpr, port, duration, warmup, gun)

            port2 = free_port()
            cfg2 = root / "config-rss.toml"
            cfg2.write_text(config_toml(root / "data-rss", key, fpr, port2), encoding="utf-8")
            servers.append(start_server("formrelay", cfg2, root, port=port2, **gun))
            up = upload_rss(servers[0])
        finally:
            for s in servers:
                s.stop()
            kill_agents(root)

    for r, results in enumerate(rounds):
        print(f"\nPOST /f/<form> alone (forms fetched before the clock started), round {r + 1}")
        print(table(HEADERS, [row(n, x["formrelay"], x["plain"]) for n, x in results.items()]))
    print("\nA patient's step: GET the form, then POST it (both on the clock, POST timed)")
    print(table(HEADERS, [row(16, flow["formrelay"], flow["plain"])]))
    print(f"\nPOST alone while {SLOW} connections trickle a body and {IDLE} send nothing "
          f"(formrelay only; plain without them)")
    print(table(HEADERS, [row(16, slow["formrelay"], slow["plain"])]))
    print(f"form GETs from another address meanwhile: {slow['formrelay']['gets']:.0f}/s "
          f"answered, {slow['formrelay']['get_failed']} timed out (5 s)")
    print(f"CPU ms: server CPU per post (gunicorn master + workers + gpg). ceiling/s: what "
          f"{CPUS} idle CPUs allow at that CPU cost\n(formrelay / plain). other CPU: how busy "
          f"the rest of the machine was, in CPUs (> 0.2 skews the rates).")
    if shares:
        print("\nWhere a formrelay post's CPU goes at 16 clients (py-spy samples of the "
              "workers; ms = share x CPU per post)")
        print(table(HEADERS, [row(16, prof, prof["plain"])]))
        print(table(["part", "share", "ms per post"],
                    [[name, f"{share * 100:.1f} %", f"{share * prof['cpu']:.2f}"]
                     for name, share in shares]))
    if pg_rows:
        plain16 = rounds[-1]
        print("\nformrelay on PostgreSQL (fsync off, as tests/pg.py runs it), beside the plain "
              "form on SQLite from the last round above")
        print(table(["setup", "clients", "posts/s", "p50 ms", "p99 ms", "errors",
                     "app CPU ms", "db CPU ms", "plain/s", "ratio", "other CPU"],
                    [[name, n, f"{x['rate']:.0f}", f"{x['p50']:.1f}", f"{x['p99']:.1f}",
                      x["errors"], f"{x['app']:.1f}", f"{x['db']:.1f}",
                      f"{plain16[n]['plain']['rate']:.0f}",
                      f"{x['rate'] / plain16[n]['plain']['rate']:.2f}x", f"{x['other']:.2f}"]
                     for name, n, x in pg_rows]))
    print()
    print(table(["20 MB upload", "status", "seconds", "RSS before MB", "peak before MB",
                 "peak after MB", "added MB"],
                [["formrelay worker", up["status"], f"{up['seconds']:.2f}",
                  f"{up['rss_before']:.1f}", f"{up['hwm_before']:.1f}",
                  f"{up['hwm_after']:.1f}", f"{up['added']:.1f}"]]))
    top = rounds[-1][16]
    f, p = top["formrelay"], top["plain"]
    errors = sum(x[k]["errors"] for results in rounds for x in [*results.values(), flow, slow]
                 for k in ("formrelay", "plain"))
    checks = [
        (f"submissions/s at 16 clients >= {TARGET_RATE}", f"{f['rate']:.0f}",
         f["rate"] >= TARGET_RATE),
        (f"p99 at 16 clients <= {TARGET_P99_MS} ms", f"{f['p99']:.1f}",
         f["p99"] <= TARGET_P99_MS),
        (f"ratio to plain endpoint >= {TARGET_RATIO}", f"{f['rate'] / p['rate']:.2f}",
         f["rate"] / p["rate"] >= TARGET_RATIO),
        (f"ceiling/s at that CPU cost (idle CPUs) >= {TARGET_RATE}",
         f"{CPUS * 1000 / f['cpu']:.0f}", CPUS * 1000 / f["cpu"] >= TARGET_RATE),
        (f"ratio of the ceilings >= {TARGET_RATIO}", f"{p['cpu'] / f['cpu']:.2f}",
         p["cpu"] / f["cpu"] >= TARGET_RATIO),
        ("form GETs answered under slow clients, none timed out",
         f"{slow['formrelay']['gets']:.0f}/s, {slow['formrelay']['get_failed']} timed out",
         slow["formrelay"]["gets"] > 0 and slow["formrelay"]["get_failed"] == 0),
        (f"20 MB upload adds <= {TARGET_RSS_MB} MB RSS", f"{up['added']:.1f}",
         up["added"] <= TARGET_RSS_MB and up["status"] == 200),
        ("no failed posts", str(errors), errors == 0),
    ]
    print()
    print(table(["target", "measured", "met"],
                [[name, value, "yes" if met else "NO"] for name, value, met in checks]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
