"""Benchmark of the widget page (issue 3): `GET /f/<form_id>?embed=1` under gunicorn.

    .venv/bin/python bench/bench_widget.py            # about 1 minute
    .venv/bin/python bench/bench_widget.py --quick    # about 20 seconds

It starts formrelay under gunicorn with the options of `formrelay serve` (gevent,
2 workers unless told otherwise), with a throw-away curve key and a form of
ten questions, and drives `GET /f/bench?embed=1` (what every iframe loads: the form
rendered with a fresh signed token) with 1, 8 and 16 concurrent keep-alive clients from
a separate process on 127.0.0.1 (this file run with `--load`). It reports requests/s,
p50 and p99; the same for `GET /widget.js` (conditional: a browser with the script
cached); and the size of widget.js raw and gzipped.

Target (issue 3): none given; the page should be cheap next to a submission.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    ROOT,
    free_port,
    kill_agents,
    machine,
    make_key,
    percentile,
    start_server,
    table,
)

LEVELS = (1, 8, 16)
FORM = "bench"

CONFIG = """\
[server]
base_url = "http://127.0.0.1:{port}"
data_dir = "data"
practice_name = "Fysiotherapie Bench"
practice_phone = "020 555 0101"
practice_email = "balie@praktijk.test"

[recipients.clinician]
email = "clinician@praktijk.test"
key_file = "{key}"
fingerprint = "{fpr}"

[forms.{form}]
title = "Intake fysiotherapie"
recipients = ["clinician"]
delivery = "hold"
allowed_origins = ["https://www.praktijk.test"]
notice = "Bij spoed: bel 112 of de huisartsenpost."
intro = "Vul dit formulier in voor uw eerste afspraak."
"""

FIELDS = [
    ("name", "text", "Naam", True), ("email", "email", "E-mailadres", False),
    ("phone", "tel", "Telefoon", False), ("born", "birthdate", "Geboortedatum", True),
    ("bsn", "bsn", "BSN", False), ("complaint", "textarea", "Uw klacht", True),
    ("history", "textarea", "Eerdere behandelingen", False),
    ("medication", "textarea", "Medicijnen", False),
    ("letter", "file", "Verwijsbrief", False),
    ("consent", "consent", "Ik geef toestemming voor de verwerking.", True),
]


def write_config(root: Path, port: int, fpr: str, key: Path) -> Path:
    text = CONFIG.format(port=port, key=key, fpr=fpr, form=FORM)
    for name, kind, label, required in FIELDS:
        text += (f'\n[[forms.{FORM}.fields]]\nname = "{name}"\ntype = "{kind}"\n'
                 f'label = "{label}"\nrequired = {"true" if required else "false"}\n')
    path = root / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- the load process ------------------------------------------------------------------
def load(spec: dict[str, Any]) -> dict[str, Any]:
    """`clients` threads, each one keep-alive connection to 127.0.0.1, GET `path` until
    `duration` seconds or `max_requests` in total; returns the latencies."""
    deadline = time.monotonic() + float(spec["duration"])
    budget, lock = [int(spec["max_requests"])], threading.Lock()
    samples: list[tuple[float, int]] = []
    headers = spec.get("headers", {})

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=60)
        mine: list[tuple[float, int]] = []
        while time.monotonic() < deadline:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            start = time.perf_counter()
            try:
                conn.request("GET", spec["path"], headers=headers)
                resp = conn.getresponse()
                resp.read()
                mine.append((time.perf_counter() - start, resp.status))
            except (OSError, http.client.HTTPException):
                mine.append((time.perf_counter() - start, 0))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=60)
        conn.close()
        with lock:
            samples.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(spec["clients"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=float(spec["duration"]) + 60)
    return {"samples": samples, "elapsed": time.perf_counter() - t0}


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--load"], input=json.dumps(spec).encode(),
                          capture_output=True, timeout=float(spec["duration"]) + 120,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"load process failed: {proc.stderr.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def row(label: str, clients: int, result: dict[str, Any]) -> list[Any]:
    lat = [s[0] for s in result["samples"] if s[1] in (200, 304)]
    bad = sum(1 for s in result["samples"] if s[1] not in (200, 304))
    rate = len(lat) / result["elapsed"]
    return [label, clients, len(lat), bad, f"{rate:.0f}",
            f"{percentile(lat, 50) * 1000:.1f}", f"{percentile(lat, 99) * 1000:.1f}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (3 s per level)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    ap.add_argument("--connections", type=int, default=100,
                    help="connections per worker (default 100)")
    ap.add_argument("--duration", type=float, help="seconds per level (default 8, quick 3)")
    ap.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.load:
        json.dump(load(json.load(sys.stdin)), sys.stdout)
        return 0
    duration = args.duration or (3.0 if args.quick else 8.0)
    source = (ROOT / "widgets" / "formrelay.js").read_bytes()
    print(f"formrelay widget page benchmark - {machine()}")
    print(f"gunicorn: {args.workers} workers x {args.connections} connections (gevent); "
          f"{duration:.0f} s per level\n")
    print(f"widget.js: {len(source)} bytes, {len(gzip.compress(source, 9))} bytes gzipped\n")
    with tempfile.TemporaryDirectory(prefix="fr-bench-widget-") as tmp:
        root = Path(tmp)
        fpr, key = make_key(root)
        port = free_port()
        cfg = write_config(root, port, fpr, key)
        server = start_server("formrelay", cfg, root, port=port, workers=args.workers,
                              connections=args.connections)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/widget.js")
            etag = conn.getresponse().getheader("ETag") or ""
            conn.close()
            rows = []
            for clients in LEVELS:
                spec = {"port": port, "path": f"/f/{FORM}?embed=1", "clients": clients,
                        "duration": duration, "max_requests": 200_000}
                rows.append(row("GET /f/bench?embed=1", clients, run_load(spec)))
            for clients in (16,):
                spec = {"port": port, "path": "/widget.js", "clients": clients,
                        "duration": duration, "max_requests": 200_000,
                        "headers": {"If-None-Match": etag}}
                rows.append(row("GET /widget.js (304)", clients, run_load(spec)))
        finally:
            server.stop()
            kill_agents(root)
    print(table(["request", "clients", "answers", "errors", "req/s", "p50 ms", "p99 ms"],
                rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
