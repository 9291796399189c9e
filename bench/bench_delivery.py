"""Benchmark of mail delivery from the outbox (issue 4).

    .venv/bin/python bench/bench_delivery.py            # about 1 minute
    .venv/bin/python bench/bench_delivery.py --quick    # about 30 seconds

It starts formrelay under gunicorn (the options of `formrelay serve`, 2 gevent
workers) with the intake benchmark's form (bench_intake.py, ~5 KB of answers,
delivery = "email"), a real SMTP relay on 127.0.0.1 (aiosmtpd with STARTTLS and a
certificate from a throw-away CA, tests/smtpd.py, in this process) and one
`formrelay worker` process, then measures:

1. intake and delivery together: 16 clients post as fast as the intake benchmark does
   while the worker delivers; submissions/s accepted, mails/s delivered during the
   intake, the backlog when the intake stops and how long it takes to drain, and that
   every mail arrived exactly once (unique Message-IDs);
2. delivery alone: with the worker stopped a backlog is queued, then the worker is
   started; mails/s from the first to the last mail the relay accepted;
3. a 20 MB upload: the worker's peak resident set (VmHWM) before and after sending the
   ~38 MB message.

Targets: delivery keeps up with intake (the backlog drains within a few seconds of the
intake stopping) and sending the 20 MB message adds <= 16 MB to the worker's peak RSS.
On a 2-CPU machine the relay, gunicorn, the worker and the load generator share the
CPUs, so the figures are a floor, not the worker's ceiling.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    PY,
    ROOT,
    SECRET,
    free_port,
    kill_agents,
    machine,
    make_key,
    proc_status_kb,
    run_load,
    start_server,
    table,
)
from bench.bench_intake import ANSWERS, FORM, UPLOAD_MB, config_toml
from tests.smtpd import Recorder, make_tls_files, smtp_server

CLIENTS = 16
TARGET_DRAIN_S, TARGET_RSS_MB = 5.0, 16


def delivery_config(data: Path, key: Path, fpr: str, port: int, smtp_port: int,
                    ca: Path) -> str:
    """The intake benchmark's config, with the sink replaced by the local relay."""
    text = config_toml(data, key, fpr, port)
    smtp = (f'host = "127.0.0.1"\nport = {smtp_port}\nsecurity = "starttls"\n'
            f'ca_file = "{ca}"\nmax_message_mb = {2 * UPLOAD_MB + 5}\n')
    text, n = re.subn(r'(?m)^sink_dir = ".*"\n', lambda _: smtp, text)
    if n != 1:
        raise RuntimeError("bench_intake.config_toml changed: no sink_dir line to replace")
    return text


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FORMRELAY_SECRET_KEY": SECRET, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        proc = subprocess.Popen([PY, "-m", "formrelay", "--config", str(config), "worker",
                                 "--interval", "0.2"], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    wait(lambda: "delivery worker" in log.read_text(errors="replace"), 60, "worker start")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def wait(cond: Callable[[], bool], timeout: float, what: str) -> float:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.02)
    return time.monotonic()


def spec(port: int, duration: float, **extra: Any) -> dict[str, Any]:
    return {"port": port, "path": f"/f/{FORM}", "clients": CLIENTS, "duration": duration,
            "max_requests": 50_000, "fields": ANSWERS, "fetch_form": True,
            "origin": f"http://127.0.0.1:{port}", **extra}


def accepted(load: dict[str, Any]) -> int:
    return sum(1 for *_, status in load["samples"] if status == 200)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter intake (5 s instead of 15)")
    args = ap.parse_args(argv)
    duration = 5.0 if args.quick else 15.0
    print(f"formrelay delivery benchmark: {machine()}")
    with tempfile.TemporaryDirectory(prefix="formrelay-bench-") as tmp:
        root = Path(tmp)
        fpr, key = make_key(root)
        tls = make_tls_files(root)
        relay = Recorder()
        with smtp_server(tls, handler=relay) as (_, smtp_port):
            port = free_port()
            cfg = root / "config.toml"
            cfg.write_text(delivery_config(root / "data", key, fpr, port, smtp_port, tls.ca),
                           encoding="utf-8")
            server = start_server("formrelay", cfg, root, port=port, workers=2)
            log = root / "worker.log"
            worker = start_worker(cfg, log)
            try:
                # 1. intake and delivery together
                t0 = time.monotonic()
                load = run_load(spec(port, duration), timeout=duration + 240)
                t1 = time.monotonic()
                n1 = accepted(load)
                during = len(relay.messages)
                t2 = wait(lambda: len(relay.messages) >= n1, 300, "the backlog to drain")
                ids = [m.parsed()["Message-ID"] for m in relay.messages]
                together = {"intake": n1 / (t1 - t0), "delivered": during / (t1 - t0),
                            "backlog": n1 - during, "drain": t2 - t1,
                            "overall": n1 / (t2 - t0), "unique": len(set(ids)),
                            "total": len(ids), "errors": len(load["samples"]) - n1}
                # 2. delivery alone, from a backlog
                stop(worker)
                before = len(relay.messages)
                load = run_load(spec(port, duration / 2), timeout=duration + 240)
                n2 = accepted(load)
                worker = start_worker(cfg, log)
                wait(lambda: len(relay.messages) >= before + n2, 300, "delivery of the backlog")
                batch = relay.messages[before:]
                alone = (len(batch) - 1) / max(1e-9, batch[-1].at - batch[0].at)
                # 3. one 20 MB upload
                hwm0 = proc_status_kb(worker.pid, "VmHWM")
                before = len(relay.messages)
                up = run_load(spec(port, 300, clients=1, max_requests=1,
                                   upload=["attachment", "verwijsbrief.pdf", UPLOAD_MB << 20]),
                              timeout=400)
                assert accepted(up) == 1, up["samples"]
                wait(lambda: len(relay.messages) > before, 300, "the 20 MB mail")
                hwm1 = proc_status_kb(worker.pid, "VmHWM")
                big = len(relay.messages[-1].data) / 2**20
            finally:
                stop(worker)
                server.stop()
                kill_agents(root)

    print(f"\n1. intake with {CLIENTS} clients for {duration:g} s while the worker delivers")
    t = together
    print(table(["intake/s", "delivered/s", "backlog at end", "drain s", "overall/s",
                 "mails", "unique ids", "post errors"],
                [[f"{t['intake']:.0f}", f"{t['delivered']:.0f}", t["backlog"],
                  f"{t['drain']:.2f}", f"{t['overall']:.0f}", t["total"], t["unique"],
                  t["errors"]]]))
    print(f"\n2. delivery alone: {n2} queued mails at {alone:.0f} mails/s")
    print(f"\n3. a {UPLOAD_MB} MB upload ({big:.1f} MB message): worker peak RSS "
          f"{hwm0 / 1024:.1f} MB before, {hwm1 / 1024:.1f} MB after "
          f"(+{(hwm1 - hwm0) / 1024:.1f} MB)")
    checks = [
        (f"backlog drained within {TARGET_DRAIN_S:g} s of the intake stopping",
         f"{t['drain']:.2f} s", t["drain"] <= TARGET_DRAIN_S),
        ("every mail delivered exactly once", f"{t['unique']}/{t['total']}",
         t["unique"] == t["total"]),
        (f"20 MB message adds <= {TARGET_RSS_MB} MB peak RSS",
         f"{(hwm1 - hwm0) / 1024:.1f} MB", (hwm1 - hwm0) / 1024 <= TARGET_RSS_MB),
    ]
    print()
    print(table(["target", "measured", "met"], [[a, b, "yes" if c else "NO"]
                                                for a, b, c in checks]))
    return 0 if all(c for *_, c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
