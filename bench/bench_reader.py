"""Benchmark of the browser reader (issue 18): decrypt and show a held submission in
headless Chromium, for a 5 KB submission and one with a 20 MB upload.

    .venv/bin/python bench/bench_reader.py            # about a minute
    .venv/bin/python bench/bench_reader.py --runs 1   # quicker

It starts formrelay in-process (werkzeug, threads) with a form sent to a recipient whose
key was made by the vendored OpenPGP.js (node), stores the two submissions through the
relay (real gpg), logs a clinician in with Debian's /usr/bin/chromium and opens each
submission in the page. Reported per case: the time from "Open" until the answers are on
screen (the ciphertext fetch, the streamed decryption, the MIME parsing, the rendering),
and the longest gap between two animation frames meanwhile: how long the page froze.
The passphrase unlock (OpenPGP.js's S2K, once per page) is reported apart. The page
decrypts in a Web Worker (static/reader/decrypt.js); the bench waits until the page has
checked and started it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pyotp
import tomli_w
from playwright.sync_api import Page, sync_playwright
from werkzeug.datastructures import FileStorage
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from formrelay import create_app  # noqa: E402
from formrelay.settings import SECRET_KEY_ENV  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PASSWORD = "een lang meetwachtwoord"  # noqa: S105 - a throw-away value
PASSPHRASE = "een lange bench leeszin"  # noqa: S105 - a throw-away value
VENDOR = ROOT / "formrelay" / "static" / "vendor"

# Frame gaps are measured from a requestAnimationFrame loop the bench adds to the page
# (page.evaluate: the bench's own code, outside the page's CSP).
WATCH = """() => { window.__gaps = []; window.__stop = false; window.__last = performance.now();
  const tick = () => { const now = performance.now(); window.__gaps.push(now - window.__last);
    window.__last = now; if (!window.__stop) requestAnimationFrame(tick); };
  requestAnimationFrame(tick); }"""
STOP = """() => { window.__stop = true;
  window.__gaps.push(performance.now() - window.__last); return window.__gaps; }"""


def node_key() -> dict[str, str]:
    vendored = json.loads((VENDOR / "openpgp.json").read_text())["file"]
    out = subprocess.run(["node", str(ROOT / "tests" / "openpgp_make.js"),  # noqa: S603, S607
                          str(VENDOR / vendored), PASSPHRASE, "BENC-HREC-OVER"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    made: dict[str, str] = json.loads(out)
    return made


def setup(folder: Path, port: int) -> tuple[Any, str, list[str]]:
    cfg = {
        "server": {"data_dir": str(folder / "data"), "practice_name": "Bench",
                   "practice_phone": "020 555 0101", "min_fill_seconds": 0,
                   "base_url": f"http://localhost:{port}", "max_request_mb": 30},
        "smtp": {"from_address": "forms@bench.test"},
        "recipients": {"reader": {"email": "reader@bench.test", "key_source": "browser"}},
        "forms": {"bench": {"title": "Bench", "recipients": ["reader"], "delivery": "hold",
                            "fields": [
                                {"name": "name", "type": "text", "label": "Naam"},
                                {"name": "complaint", "type": "textarea", "label": "Klacht",
                                 "max_length": 10000},
                                {"name": "scan", "type": "file", "label": "Scan",
                                 "accept": ["pdf"], "max_size_mb": 25}]}},
    }
    path = folder / "config.toml"
    path.write_text(tomli_w.dumps(cfg))
    app = create_app(path, environ={SECRET_KEY_ENV: "bench-secret-" + "b" * 40})
    services = app.extensions["formrelay"]
    user = services.accounts.add("bench", PASSWORD, email="bench@bench.test",
                                 recipients=["reader"])
    secret = services.accounts.new_totp_secret()
    codes = services.accounts.enrol(user, secret, pyotp.TOTP(secret).now(), "127.0.0.1")
    key = node_key()
    made = services.reader_keys.upload(user, key["fingerprint"], key["public_key"],
                                       key["locked_key"], key["recovery_locked_key"],
                                       "127.0.0.1")
    services.reader_keys.activate(user, made.id, "127.0.0.1")
    words = ["knie", "pijn", "sinds", "week", "trap", "lopen", "zwelling", "ochtend", "koorts"]
    rng = random.Random(18)  # text that does not compress away: about 5 KB of ciphertext
    text = " ".join(rng.choice(words) + str(rng.randint(0, 99)) for _ in range(900))[:5000]
    small = services.relay.submit("bench", "nl", {"name": ["Bench Patiënt"],
                                                  "complaint": [text]})
    pdf = b"%PDF-1.4\n" + os.urandom(20 * 1024 * 1024)
    big = services.relay.submit("bench", "nl", {"name": ["Bench Groot"], "complaint": ["-"]},
                                {"scan": [FileStorage(io.BytesIO(pdf), "scan.pdf",
                                                      content_type="application/pdf")]})
    return app, codes[0], [small.reference, big.reference]


def login(page: Page, base: str, code: str) -> None:
    page.goto(f"{base}/clinician/login")
    page.get_by_label("Gebruikersnaam").fill("bench")
    page.get_by_label("Wachtwoord").fill(PASSWORD)
    page.get_by_role("button", name="Volgende").click()
    page.locator("#code").fill(code)  # a recovery code: the enrol code's step is used
    page.get_by_role("button", name="Inloggen").click()
    page.wait_for_url(f"{base}/clinician/")


def open_one(page: Page, ref: str, passphrase: str | None) -> dict[str, float]:
    page.evaluate(WATCH)
    start = page.evaluate("() => performance.now()")
    page.locator(f"#row-{ref}").get_by_role("button", name="Openen").click()
    if passphrase:
        page.get_by_label("Leeswachtzin", exact=True).fill(passphrase)
        start = page.evaluate("() => performance.now()")
        page.locator("#unlock").get_by_role("button", name="Openen").click()
    page.wait_for_function("() => !document.querySelector('#opened').hidden", timeout=600_000)
    took = page.evaluate("() => performance.now()") - start
    gaps = page.evaluate(STOP)
    marks = page.evaluate("(t0) => Object.fromEntries(performance.getEntriesByType('mark')"
                          ".map(m => [m.name.split(':')[1], Math.round(m.startTime - t0)]))",
                          start)
    page.evaluate("() => performance.clearMarks()")
    print(f"  {ref}: phases (ms from Open) {marks}, frame gaps > 100 ms: "
          f"{[round(g) for g in gaps if g > 100]}")
    page.get_by_role("button", name="Terug naar de lijst").click()
    return {"ms": took, "max_gap_ms": max(gaps or [0])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app, code, (small, big) = setup(Path(tmp), port)
        sizes = {ref: app.extensions["formrelay"].store.submissions.get(ref)["size"]
                 for ref in (small, big)}
        server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://localhost:{port}"
        results: dict[str, list[dict[str, float]]] = {"unlock + 5 KB": [], "5 KB": [],
                                                      "20 MB upload": []}
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page()
                login(page, base, code)
                for _ in range(args.runs):
                    page.goto(f"{base}/clinician/")  # a fresh page: the key locked again
                    page.locator("#reader[data-ready]").wait_for(state="attached")
                    results["unlock + 5 KB"].append(open_one(page, small, PASSPHRASE))
                    results["5 KB"].append(open_one(page, small, None))
                    results["20 MB upload"].append(open_one(page, big, None))
                browser.close()
        finally:
            server.shutdown()
    print(f"ciphertext sizes: 5 KB case {sizes[small]} bytes, 20 MB case {sizes[big]} bytes")
    print(f"{'case':<16} {'median ms':>10} {'max ms':>10} {'longest frame gap ms':>22}")
    for name, runs in results.items():
        ms = [r["ms"] for r in runs]
        gap = max(r["max_gap_ms"] for r in runs)
        print(f"{name:<16} {statistics.median(ms):>10.0f} {max(ms):>10.0f} {gap:>22.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
