"""Benchmark of the PostgreSQL store: memory of a 20 MB upload and its delivery.

    .venv/bin/python bench/bench_postgres.py      # about 1 minute

Starts a throw-away PostgreSQL (Debian's postgresql package, as the tests do: initdb on a
free loopback port, as the `postgres` user when run as root), then formrelay under
gunicorn (`formrelay serve`'s options, 2 gevent workers) with `server.database_url`
pointing at it, the bench form of bench_intake.py and a "hold" form taking a 20 MB
attachment. After a warm-up of ten small posts it sends one 20 MB upload and reads the
worker's peak resident set (VmHWM in /proc/<pid>/status) before and after: the
ciphertext goes into `submission_chunks` in rows of 1 MB, never whole in memory.

Then, in this process, it streams that ciphertext back out the way a download and the
outbox do (`Store.submissions.stream`, `Store.submissions.copy_to`) and reads this process's
peak RSS before and after.

Target (issue 11): a 20 MB upload adds <= 50 MB RSS on PostgreSQL too.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import free_port, kill_agents, machine, make_key, start_server, table
from bench.bench_intake import TARGET_RSS_MB, UPLOAD_MB, config_toml, upload_rss
from tests.pg import PgServer


def stream_rss(url: str, root: Path) -> dict[str, Any]:
    """This process's peak RSS before and after reading the stored upload back out."""
    from formrelay.store import Store

    store = Store(root / "unused.db", url=url)
    try:
        ref = max(store.submissions.rows(), key=lambda r: r["size"] or 0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        total = sum(len(chunk) for chunk in store.submissions.stream(ref["reference"]))
        with open(os.devnull, "wb") as sink:
            store.submissions.copy_to(ref["reference"], sink)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        store.close()
    return {"bytes": total, "added": (after - before) / 1024}


def main() -> int:
    print(f"formrelay PostgreSQL benchmark: {machine()}")
    pg = PgServer()
    try:
        url = pg.new_database()
        with tempfile.TemporaryDirectory(prefix="formrelay-bench-") as tmp:
            root = Path(tmp)
            fpr, key = make_key(root)
            port = free_port()
            cfg = root / "config.toml"
            text = config_toml(root / "data", key, fpr, port)
            cfg.write_text(text.replace("[server]\n", f'[server]\ndatabase_url = "{url}"\n', 1),
                           encoding="utf-8")
            server = start_server("formrelay", cfg, root, port=port, workers=2)
            try:
                up = upload_rss(server)
            finally:
                server.stop()
                kill_agents(root)
            out = stream_rss(url, root)
    finally:
        pg.stop()
    ok_up = up["status"] == 200 and up["added"] <= TARGET_RSS_MB
    ok_out = out["added"] <= TARGET_RSS_MB
    print(table(["what", "result", "target", "met"], [
        [f"{UPLOAD_MB} MB upload: worker peak RSS added (HTTP {up['status']}, "
         f"{up['seconds']:.1f} s; RSS before {up['rss_before']:.0f} MB)",
         f"{up['added']:.1f} MB", f"<= {TARGET_RSS_MB} MB", "yes" if ok_up else "NO"],
        [f"streaming it back out ({out['bytes'] / (1 << 20):.1f} MB ciphertext, twice): "
         "peak RSS added", f"{out['added']:.1f} MB", f"<= {TARGET_RSS_MB} MB",
         "yes" if ok_out else "NO"],
    ]))
    return 0 if ok_up and ok_out else 1


if __name__ == "__main__":
    sys.exit(main())
