"""Operations benchmark (not a test): backup speed and its effect on writers, and the
cost of `formrelay check` and /healthz.

    .venv/bin/python bench/bench_ops.py [--submissions 400] [--kb 64]

1. A database with N held submissions of about K KB ciphertext each (real gpg output
   of random data, stored through Store.submissions.add).
2. `Store.backups.create` of it, alone, then again while a writer thread keeps adding
   submissions: backup time, MB/s, and the writer's slowest commit during the backup
   against its slowest commit before it (a one-step online backup holds a read
   snapshot; in WAL mode writers should not wait for it).
3. `formrelay check --offline` wall time, /healthz first call (encrypts the SEIPD probe)
   and later calls (probe cached).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

from _harness import SECRET, machine, make_key, percentile, table
from click.testing import CliRunner

from formrelay import create_app
from formrelay.cli import cli
from formrelay.config import load_config
from formrelay.intake.relay import Relay
from formrelay.intake.submission import new_reference
from formrelay.localtime import iso, utcnow
from formrelay.services import build

CONFIG = """\
[server]
practice_name = "Bench"
practice_phone = "1"
data_dir = "data"
[recipients.dr]
email = "dr@praktijk.test"
key_file = "clinician.asc"
fingerprint = "{fpr}"
[forms.intake]
title = "Intake"
recipients = ["dr"]
delivery = "hold"
[[forms.intake.fields]]
name = "name"
type = "text"
label = "Naam"
"""


def add(relay: Relay, ct: Path) -> float:
    """One submission row + its audit event in one transaction; returns seconds."""
    ref = new_reference()
    row = {"reference": ref, "form_id": "intake", "received_at": iso(utcnow()),
           "delivery": "hold", "status": "held", "file_count": 0}
    start = time.perf_counter()
    relay.store.submissions.add(row, ct, lambda: relay.store.audit.append(
        "received", actor="patient", reference=ref, form_id="intake"))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--submissions", type=int, default=400)
    ap.add_argument("--kb", type=int, default=64)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ops-"))
    try:
        fpr, _ = make_key(root)
        cfg = root / "config.toml"
        cfg.write_text(CONFIG.format(fpr=fpr))
        env = {"FORMRELAY_SECRET_KEY": SECRET}
        settings = load_config(cfg, env)
        relay = build(settings).relay
        relay.sync_keys()
        ct = root / "ct.asc"
        relay.keyring.encrypt_bytes(secrets.token_bytes(args.kb * 1024), [fpr], ct)
        for _ in range(args.submissions):
            add(relay, ct)
        db_mb = settings.db_path.stat().st_size / 1e6

        t = time.perf_counter()
        relay.store.backups.create(root / "alone.db")
        alone = time.perf_counter() - t

        baseline: list[float] = []
        during: list[float] = []
        phase = {"during": False}
        stop = threading.Event()

        def writer() -> None:
            while not stop.is_set():
                (during if phase["during"] else baseline).append(add(relay, ct))
            relay.store.close()

        th = threading.Thread(target=writer)
        th.start()
        while len(baseline) < 50:
            time.sleep(0.01)
        phase["during"] = True
        t = time.perf_counter()
        counts = relay.store.backups.create(root / "busy.db")
        busy = time.perf_counter() - t
        phase["during"] = False
        stop.set()
        th.join()

        runner = CliRunner()
        t = time.perf_counter()
        r = runner.invoke(cli, ["--config", str(cfg), "check", "--offline"], env=env)
        check_s = time.perf_counter() - t
        app = create_app(cfg, environ=env)
        client = app.test_client()
        t = time.perf_counter()
        client.get("/healthz")
        first = time.perf_counter() - t
        later = []
        for _ in range(20):
            t = time.perf_counter()
            client.get("/healthz")
            later.append(time.perf_counter() - t)

        print(machine())
        print(f"database: {args.submissions} held submissions of ~{args.kb} KB, "
              f"{db_mb:.1f} MB; check exit {r.exit_code}")
        print(table(["what", "value"], [
            ["backup alone", f"{alone * 1000:.0f} ms ({db_mb / alone:.0f} MB/s)"],
            ["backup while writing", f"{busy * 1000:.0f} ms, {counts['submissions']} "
                                     "submissions in the copy"],
            ["writer commits before / during", f"{len(baseline)} / {len(during)}"],
            ["writer slowest commit before", f"{max(baseline) * 1000:.1f} ms "
                                             f"(p50 {percentile(baseline, 50) * 1000:.1f})"],
            ["writer slowest commit during",
             f"{max(during) * 1000:.1f} ms" if during else "none during the backup"],
            ["formrelay check --offline", f"{check_s * 1000:.0f} ms"],
            ["/healthz first (SEIPD probe)", f"{first * 1000:.1f} ms"],
            ["/healthz later (p50 / max)", f"{percentile(later, 50) * 1000:.1f} / "
                                           f"{max(later) * 1000:.1f} ms"],
        ]))
    finally:
        os.system(f"gpgconf --homedir {root}/clinician-home --kill gpg-agent >/dev/null 2>&1")  # noqa: S605
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
