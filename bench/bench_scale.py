"""Benchmark of scaling out (issue 11): intake on SQLite and PostgreSQL with one and two
app instances, and one instance serving 200 practices.

    .venv/bin/python bench/bench_scale.py            # about 3 minutes
    .venv/bin/python bench/bench_scale.py --quick    # about 2 minutes
    .venv/bin/python bench/bench_scale.py --only practices --practices 50

Part 1, intake. It starts a throw-away PostgreSQL (tests/pg.py: Debian's postgresql,
initdb on a free loopback port, as the `postgres` user when run as root; fsync off, as
in the tests) and, under gunicorn with the options of `formrelay serve` (bench/_serve.py;
2 gevent workers each unless told otherwise), with the bench form of bench_intake.py:

* (a) SQLite: one instance, its database in its data folder (the default);
* (b) PostgreSQL: one instance, `server.database_url` naming a database of its own;
* (c) PostgreSQL: two instances on two ports sharing one database, each with its own
  data folder (the GnuPG home) and the same worker count as (a), the clients split
  evenly over both (a load process per instance, as a proxy would spread them).

At 8 and 16 concurrent clients (`_loadgen.py`, a separate process on 127.0.0.1) each
client fetches its forms before the clock starts; only `POST /f/<form_id>` is timed, as
in bench_intake.py's main table: submissions/s, p50 and p99. "app CPU" is the CPU time
of the gunicorn masters, workers and the gpg they ran per post, "db CPU" that of the
PostgreSQL server (postmaster and its backends). At the end, the rows in `submissions`
and `outbox` are counted against the posts answered 200: each stored once, one mail each.

Part 2, 200 practices on one instance (SQLite). A config with `[practices.p000]` ...
`[practices.p199]`, each with its own name, phone, e-mail, sender, recipient (`r000`...;
its own throw-away key, so the keyring holds 200 keys) and form (`f000`...; the bench
form), beside the same config with one practice. It measures, for both: `load_config`
(median of 5), `create_app` in this process (opens the database and imports every
recipient's key: first on an empty data folder, then again with the keys there), the
time `formrelay serve` takes until every worker answers, the resident memory of a worker
(VmRSS and the peak VmHWM from /proc) after a warm-up of one post to every form,
then GET and POST latency of one client going round the forms of every practice. Last,
a config reload with a 201st practice: in this process (`reload.Live.check`: load,
validate, build, import the keys again: every recipient's, not only the new one's) and
on the running server (the file written until `GET /f/f200` answers 200; the workers
look at the file at most every `server.reload_seconds` = 3 s, at a request, and that
request waits for the reload), with a client meanwhile fetching an existing form (a new
connection each time, so both workers see it): how many it got, their median and the
slowest.

What the machine's CPUs mean for these numbers. Everything runs on this one machine: the
load processes, every app instance, the gpg each post runs and PostgreSQL. With 2 CPUs,
(c) does not show what a second host would add: both instances and the database take
turns on the same two CPUs, so (c) against (b) shows the cost of a second instance and
its pool on one box (contention, more connections, row locks on the shared database) and
that nothing is lost or doubled, not the gain of separate hosts; that gain is bounded by
"ceiling/s", the rate the measured CPU per post (app + db) allows on idle CPUs. The
"other CPU" column says how busy the rest of the machine was during a run, in CPUs
(more than ~0.2 skews rates and latencies): on a shared machine, compare the CPU per
post, which is much less sensitive, rather than the rates.

What the bench form changes from the defaults (as bench_intake.py): no minimum fill time
and rate limits far above the load (the counters still run, in the database).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import secrets
import sqlite3
import statistics
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
    SECRET,
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
from bench._loadgen import HIDDEN, multipart
from bench.bench_intake import ANSWERS, FIELDS, FORM, UPLOAD_MB, config_toml
from tests.pg import PgServer

LEVELS = (8, 16)
CPUS = os.cpu_count() or 1
ENV = {"FORMRELAY_SECRET_KEY": SECRET}


# -- part 1: intake on SQLite and PostgreSQL, one and two instances -------------------------
def with_database(text: str, url: str) -> str:
    return text.replace("[server]\n", f'[server]\ndatabase_url = "{url}"\n', 1)


def pg_pid(pg: PgServer) -> int:
    return int((pg.root / "data" / "postmaster.pid").read_text().split("\n", 1)[0])


class Setup:
    """One measured layout: its servers (the load split evenly over them) and database."""

    def __init__(self, name: str, servers: list[Server], *, url: str = "",
                 db_path: Path | None = None, origin: str, pg: int = 0):
        self.name, self.servers, self.url, self.db_path = name, servers, url, db_path
        self.origin, self.pg = origin, pg
        self.ok_posts = 0

    def cpu(self) -> tuple[float, float]:
        app = sum(tree_cpu_seconds(s.proc.pid) for s in self.servers)
        return app, tree_cpu_seconds(self.pg) if self.pg else 0.0

    def rows(self) -> tuple[int, int]:
        """Rows in submissions and outbox now."""
        sql = ["SELECT count(*) FROM submissions", "SELECT count(*) FROM outbox"]
        if self.url:
            import psycopg

            with psycopg.connect(self.url) as conn:
                a, b = (conn.execute(q.encode()).fetchone() for q in sql)
        else:
            assert self.db_path is not None
            db = sqlite3.connect(self.db_path)
            try:
                a, b = (db.execute(q).fetchone() for q in sql)
            finally:
                db.close()
        assert a is not None and b is not None
        return int(a[0]), int(b[0])


def measure(setup: Setup, clients: int, duration: float, warmup: float,
            prefetch: int) -> dict[str, Any]:
    """One load level over all of the setup's instances at once; counts the posts that
    end inside [warmup, duration]."""
    share = [clients // len(setup.servers) + (i < clients % len(setup.servers))
             for i in range(len(setup.servers))]
    started = threading.Barrier(len(setup.servers) + 1, timeout=900)
    start: dict[str, Any] = {}
    outs: list[dict[str, Any] | BaseException] = [RuntimeError("no result")] * len(share)

    def ready() -> None:
        started.wait()

    def one(i: int, server: Server) -> None:
        spec = {"port": server.port, "path": f"/f/{FORM}", "clients": share[i],
                "duration": duration, "max_requests": 100_000, "fields": ANSWERS,
                "fetch_form": True, "prefetch": prefetch, "origin": setup.origin}
        try:
            outs[i] = run_load(spec, timeout=duration + 900, on_start=ready)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outs[i] = exc
            started.abort()

    threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(setup.servers)]
    for t in threads:
        t.start()
    try:
        started.wait()  # every load process prefetched and started its clock
    except threading.BrokenBarrierError:
        pass  # one failed: its error is raised below
    start["cpu"], start["busy"] = setup.cpu(), cpu_busy_seconds()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for out in outs:
        if isinstance(out, BaseException):
            raise out
    results = [o for o in outs if isinstance(o, dict)]
    app1, db1 = setup.cpu()
    app, db = app1 - start["cpu"][0], db1 - start["cpu"][1]
    loadgen = sum(o["cpu"] for o in results)
    other = cpu_busy_seconds() - start["busy"] - app - db - loadgen
    samples = [s for o in results for s in o["samples"]]
    window = [(lat, st) for s, lat, st in samples if warmup <= s + lat <= duration]
    ok = [lat for lat, st in window if st == 200]
    setup.ok_posts += sum(1 for *_, st in samples if st == 200)
    failed = Counter(st for *_, st in samples if st != 200)
    if failed:
        print(f"  {setup.name}, {clients} clients: failed posts by HTTP status (0 = no "
              f"answer): {dict(failed)}")
        for server in setup.servers:
            lines = server.log.read_text(errors="replace").splitlines()
            for line in [ln for ln in lines if '"error"' in ln or "Error" in ln][-3:]:
                print(f"    {line[:300]}")
    posts = max(1, len(samples))
    return {"rate": len(ok) / (duration - warmup), "p50": percentile(ok, 50) * 1000,
            "p99": percentile(ok, 99) * 1000, "errors": sum(failed.values()),
            "app": app / posts * 1000, "db": db / posts * 1000,
            "other": other / elapsed, "inline": sum(o["inline_gets"] for o in results)}


def intake(root: Path, pg: PgServer, key: Path, fpr: str, args: argparse.Namespace,
           gun: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    duration, warmup = args.duration, args.warmup
    setups: list[Setup] = []
    try:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        base = config_toml(root / "a" / "data", key, fpr, port)
        (root / "a").mkdir()
        (root / "a" / "config.toml").write_text(base, encoding="utf-8")
        a = start_server("formrelay", root / "a" / "config.toml", root, port=port, **gun)
        setups.append(Setup("(a) SQLite, 1 instance", [a], origin=origin,
                            db_path=root / "a" / "data" / "formrelay.db"))
        for name, n in (("(b) PostgreSQL, 1 instance", 1), ("(c) PostgreSQL, 2 instances", 2)):
            url = pg.new_database()
            servers = []
            for i in range(n):
                folder = root / f"{name[1]}{i}"
                folder.mkdir()
                cfg = folder / "config.toml"
                # the same config as (a) but for the database and the data folder (the
                # GnuPG home); the public origin is the same (one proxy before them all)
                text = config_toml(folder / "data", key, fpr, port)
                cfg.write_text(with_database(text, url), encoding="utf-8")
                servers.append(start_server("formrelay", cfg, root, **gun))
            setups.append(Setup(name, servers, url=url, origin=origin, pg=pg_pid(pg)))
        best = 100.0
        results: list[list[Any]] = []
        for n in LEVELS:
            # forms for the whole run, fetched before the clock starts
            prefetch = int(best * 1.5 * (duration + 1) / n) + 10
            for s in setups:
                r = measure(s, n, duration, warmup, prefetch)
                best = max(best, r["rate"])
                cpu = r["app"] + r["db"]
                results.append([s.name, n, f"{r['rate']:.0f}", f"{r['p50']:.1f}",
                                f"{r['p99']:.1f}", r["errors"], f"{r['app']:.1f}",
                                f"{r['db']:.1f}" if s.pg else "-", f"{CPUS * 1000 / cpu:.0f}",
                                f"{r['other']:.2f}"])
                note = f" ({r['inline']} forms fetched inline)" if r["inline"] else ""
                print(f"  {s.name}, {n:>2} clients: {r['rate']:.0f}/s, p99 {r['p99']:.0f} ms"
                      + note, flush=True)
        stored = []
        for s in setups:
            subs, mails = s.rows()
            stored.append([s.name, s.ok_posts, subs, mails,
                           "yes" if subs == mails == s.ok_posts else "NO"])
        return results, stored
    finally:
        for s in setups:
            for server in s.servers:
                server.stop()


# -- part 2: 200 practices on one instance ----------------------------------------------------
def practices_toml(data: Path, keys: list[tuple[str, Path]], n: int, port: int) -> str:
    """[practices.p000] ... : each its own details, recipient and form (bench_intake's)."""
    origin = f"http://127.0.0.1:{port}"
    out = [f"""\
[server]
base_url = "{origin}"
data_dir = "{data}"
min_fill_seconds = 0
rate_limit_ip = "1000000/minute"
rate_limit_form = "100000000/hour"

[smtp]
from_address = "formulieren@praktijk.test"
sink_dir = "{data.parent / 'mail'}"
"""]
    for i in range(n):
        pid, (fpr, key) = f"p{i:03d}", keys[i % len(keys)]
        form = f"""
[practices.{pid}]
name = "Praktijk {i:03d}"
phone = "020 555 {i:04d}"
email = "balie@{pid}.praktijk.test"
from_address = "formulieren@{pid}.praktijk.test"

[practices.{pid}.recipients.r{i:03d}]
email = "clinician@{pid}.praktijk.test"
key_file = "{key}"
fingerprint = "{fpr}"

[practices.{pid}.forms.f{i:03d}]
title = "Intake {i:03d}"
recipients = ["r{i:03d}"]
delivery = "email"
allowed_origins = ["{origin}"]

""" + FIELDS.format(form=f"f{i:03d}", upload_mb=UPLOAD_MB + 2)
        out.append(form.replace(f"[[forms.f{i:03d}.fields]]",
                                f"[[practices.{pid}.forms.f{i:03d}.fields]]"))
    return "".join(out)


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def in_process(cfg: Path) -> dict[str, Any]:
    """load_config and create_app (first start, then with the keys imported) here."""
    from formrelay import create_app
    from formrelay.config import load_config

    load = statistics.median(timed(lambda: load_config(cfg, ENV))[0] for _ in range(5))
    out = {"load": load}
    for when in ("first", "again"):
        seconds, app = timed(lambda: create_app(cfg, environ=ENV))
        app.extensions["formrelay"].close()
        out[when] = seconds
    return out


def reload_in_process(cfg: Path, bigger: str) -> float:
    """Live.check() after the file gained a practice: load, check, build, import keys."""
    from formrelay import create_app

    app = create_app(cfg, environ=ENV)
    live = app.extensions["formrelay.live"]
    original = cfg.read_text(encoding="utf-8")
    try:
        cfg.write_text(bigger, encoding="utf-8")
        seconds, changed = timed(live.check)
        if not changed or len(live.current.settings.practices) != \
                len(re.findall(r"^\[practices\.p\d+\]$", bigger, re.M)):
            raise RuntimeError("the reload did not take the new practice")
    finally:
        cfg.write_text(original, encoding="utf-8")
        app.extensions["formrelay"].close()
    return float(seconds)


class Browser:
    """One patient at a time on a kept-alive connection: GET the form, POST it."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.boundary = "bench" + secrets.token_hex(8)

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                return resp.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def step(self, form: str) -> tuple[float, float, int]:
        """Seconds of the GET and of the POST, and the POST's status."""
        t0 = time.perf_counter()
        status, page = self.send("GET", f"/f/{form}", headers={"Accept": "text/html"})
        t1 = time.perf_counter()
        if status != 200:
            return t1 - t0, 0.0, status
        html = page.decode("utf-8", "replace")
        hidden = {k: v for rx in HIDDEN for k, v in rx.findall(html)}
        body = multipart({**hidden, **ANSWERS}, None, self.boundary)
        t2 = time.perf_counter()
        status, _ = self.send("POST", f"/f/{form}", body, {
            "Accept": "application/json", "Origin": f"http://127.0.0.1:{self.port}",
            "Content-Type": f"multipart/form-data; boundary={self.boundary}"})
        return t1 - t0, time.perf_counter() - t2, status


def serve(root: Path, cfg: Path, port: int, n: int, rounds: int, gun: dict[str, Any],
          extra: str = "") -> dict[str, Any]:
    """Start-up, memory after a warm-up, and latency over the forms of all practices."""
    t0 = time.perf_counter()
    server = start_server("formrelay", cfg, root, port=port, timeout=600, **gun)
    out: dict[str, Any] = {"start": time.perf_counter() - t0}
    try:
        forms = [f"f{i:03d}" for i in range(n)]
        browser = Browser(server.port)
        failed = [f for f in forms if browser.step(f)[2] != 200]  # warm-up: every form once
        gets, posts = [], []
        for i in range(max(rounds, 1)):
            get, post, status = browser.step(forms[i % len(forms)])
            if status != 200:
                failed.append(forms[i % len(forms)])
            gets.append(get)
            posts.append(post)
        pids = server.worker_pids()
        out.update(rss=max(proc_status_kb(p, "VmRSS") for p in pids) / 1024,
                   hwm=max(proc_status_kb(p, "VmHWM") for p in pids) / 1024,
                   get50=percentile(gets, 50) * 1000, get99=percentile(gets, 99) * 1000,
                   post50=percentile(posts, 50) * 1000, post99=percentile(posts, 99) * 1000,
                   errors=len(failed), posts=len(posts))
        if extra:  # one more practice, written to the file while serving
            out.update(reload_live(server.port, cfg, extra, forms[0]))
    finally:
        server.stop()
    return out


def reload_live(port: int, cfg: Path, extra: str, old_form: str) -> dict[str, float]:
    """Append `extra` (a practice) to the served config; seconds until its form answers,
    and the GETs of an existing form meanwhile (each on a new connection, so both
    workers see them) until 5 s after that: the request that finds the changed file
    reloads before it is answered."""
    new = re.findall(r"\[practices\.p\d+\.forms\.(f\d+)\]", extra)[0]
    stop = threading.Event()
    probes: list[float] = []

    def probe() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                Browser(port).send("GET", f"/f/{old_form}")
            except OSError:
                pass
            probes.append(time.perf_counter() - t)
            time.sleep(0.02)

    cfg.write_text(cfg.read_text(encoding="utf-8") + extra, encoding="utf-8")
    t0 = time.perf_counter()
    prober = threading.Thread(target=probe)
    prober.start()
    status, seconds = 0, float("nan")
    try:
        while time.perf_counter() - t0 < 300:
            try:
                status, _ = Browser(port).send("GET", f"/f/{new}")
            except OSError:
                status = 0
            if status == 200:
                seconds = time.perf_counter() - t0
                break
            time.sleep(0.05)
        time.sleep(5)
    finally:
        stop.set()
        prober.join()
    return {"reload_live": seconds, "probe_n": len(probes),
            "probe_p50": percentile(probes, 50), "probe_max": max(probes)}


def many_practices(root: Path, n: int, rounds: int,
                   gun: dict[str, Any]) -> tuple[list[list[Any]], dict[str, float]]:
    folder = root / "practices"
    folder.mkdir()
    t0 = time.perf_counter()
    keys = [make_key(folder, f"k{i:03d}") for i in range(n + 1)]  # the 201st for the reload
    print(f"  {len(keys)} throw-away keys made in {time.perf_counter() - t0:.1f} s", flush=True)
    # one app built and thrown away first, so that neither measured create_app pays for
    # this process's first imports and template set-up
    warm = folder / "config-warm.toml"
    warm.write_text(practices_toml(folder / "data-warm", keys[:1], 1, free_port()),
                    encoding="utf-8")
    in_process(warm)
    rows: list[list[Any]] = []
    measured: dict[str, float] = {}
    for count in (1, n):
        port = free_port()
        data = folder / f"data-{count}"
        cfg = folder / f"config-{count}.toml"
        cfg.write_text(practices_toml(data, keys[:count], count, port), encoding="utf-8")
        here = in_process(cfg)
        extra = ""
        if count == n:  # one practice more, with a key of its own
            bigger = practices_toml(data, keys, n + 1, port)
            measured["in_process"] = reload_in_process(cfg, bigger)
            extra = bigger[bigger.index(f"\n[practices.p{n:03d}]"):]
        kill_agents(folder)
        s = serve(folder, cfg, port, count, rounds, gun, extra)
        if count == n:
            measured.update({k: s[k] for k in ("reload_live", "probe_n", "probe_p50",
                                               "probe_max")})
        kill_agents(folder)
        rows.append([count, f"{here['load'] * 1000:.1f}", f"{here['first']:.2f}",
                     f"{here['again']:.2f}", f"{s['start']:.2f}", f"{s['rss']:.1f}",
                     f"{s['hwm']:.1f}", f"{s['get50']:.1f}", f"{s['get99']:.1f}",
                     f"{s['post50']:.1f}", f"{s['post99']:.1f}", s["errors"]])
        print(f"  {count} practice(s): load {here['load'] * 1000:.0f} ms, create_app "
              f"{here['first']:.2f} s, serve start {s['start']:.2f} s, worker RSS "
              f"{s['rss']:.0f} MB", flush=True)
    return rows, measured


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (4 s per level)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance "
                    "(default 2)")
    ap.add_argument("--duration", type=float, help="seconds per level (default 10, quick 4)")
    ap.add_argument("--practices", type=int, default=200, help="practices in part 2 (200)")
    ap.add_argument("--only", choices=["intake", "practices"], help="run one part")
    args = ap.parse_args(argv)
    args.duration = args.duration or (4.0 if args.quick else 10.0)
    args.warmup = 1.0 if args.quick else 2.0
    rounds = 200 if args.quick else 600
    gun = {"workers": args.workers, "connections": 100}

    print(f"formrelay scale benchmark: {machine()}")
    print(f"gunicorn gevent, {args.workers} workers x 100 connections per instance; "
          f"{args.duration:g} s per run, the first {args.warmup:g} s not counted")
    with tempfile.TemporaryDirectory(prefix="formrelay-bench-") as tmp:
        root = Path(tmp)
        try:
            if args.only != "practices":
                fpr, key = make_key(root)
                pg = PgServer()
                try:
                    results, stored = intake(root, pg, key, fpr, args, {**gun})
                finally:
                    pg.stop()
            if args.only != "intake":
                rows, reload_s = many_practices(root, args.practices, rounds, gun)
        finally:
            kill_agents(root)

    if args.only != "practices":
        print(f"\nPart 1: POST /f/<form> at 8 and 16 clients (forms fetched before the clock "
              f"started); {args.workers} workers per instance")
        print(table(["setup", "clients", "posts/s", "p50 ms", "p99 ms", "errors", "app CPU ms",
                     "db CPU ms", "ceiling/s", "other CPU"], results))
        print(f"app CPU ms / db CPU ms: CPU per post of the app instances (gunicorn + gpg) and "
              f"of PostgreSQL. ceiling/s: what {CPUS}\nidle CPUs allow at that CPU cost "
              f"(app + db). other CPU: how busy the rest of the machine was, in CPUs.\n"
              f"On one {CPUS}-CPU machine (c)'s instances share the CPUs with each other and "
              f"with PostgreSQL: (c) vs (b)\nshows the cost of a second instance, not the gain "
              f"of a second host.")
        print()
        print(table(["setup", "posts answered 200", "submissions rows", "outbox rows",
                     "each once"], stored))
    if args.only != "intake":
        print(f"\nPart 2: one instance (SQLite), 1 vs {args.practices} practices, one form "
              f"and recipient (its own key) each")
        print(table(["practices", "load_config ms", "create_app s", "again s", "serve start s",
                     "worker RSS MB", "peak MB", "GET p50 ms", "GET p99 ms", "POST p50 ms",
                     "POST p99 ms", "errors"], rows))
        print(f"create_app: in this process on an empty data folder (every key imported); "
              f"again: with the keys there.\nserve start: `formrelay serve` until all "
              f"{args.workers} workers answer. Memory: the larger worker after one post to "
              f"every form\nand {rounds} more; GET/POST: one client going round the forms of "
              f"every practice.")
        print()
        print(table([f"reload, {args.practices} -> {args.practices + 1} practices", "seconds"], [
            ["in process: reload.Live.check (load, check, build, import keys)",
             f"{reload_s['in_process']:.2f}"],
            ["running server: file written until GET /f/<new form> answers 200",
             f"{reload_s['reload_live']:.2f}"],
            [f"running server: GET of an existing form meanwhile, p50 "
             f"({reload_s['probe_n']:.0f} requests)", f"{reload_s['probe_p50']:.3f}"],
            ["running server: GET of an existing form meanwhile, slowest",
             f"{reload_s['probe_max']:.2f}"]]))
        print("The running server's workers look at the file at most every 3 s "
              "(server.reload_seconds), at a request; the request\nthat finds it changed "
              "waits for the reload (the slowest GET above).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
