"""Under gevent (gunicorn's worker) each HTTP connection is a greenlet of its own and
`threading.local` is per greenlet: the store hands a finished greenlet's SQLite
connection to the next one instead of opening one per HTTP connection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """\
from gevent import monkey
monkey.patch_all()
import sqlite3, sys
from pathlib import Path
import gevent
from formrelay.store import Store

opened = []
real_connect = sqlite3.connect
def counting_connect(*args, **kwargs):
    opened.append(1)
    return real_connect(*args, **kwargs)
sqlite3.connect = counting_connect

store = Store(Path(sys.argv[1]) / "formrelay.db")
before = len(opened)

def one_connection(n):  # what a greenlet of gunicorn's worker does for one request
    store.audit.append("login", actor=f"user{n}", ip="127.0.0.1")
    gevent.sleep(0)
    return len(store.audit.rows())

def killed_in_a_transaction():
    with store.transaction() as conn:
        conn.execute("INSERT INTO used_form_tokens (id, expires_at) VALUES ('x', 1e12)")
        gevent.sleep(10)

victim = gevent.spawn(killed_in_a_transaction)
gevent.sleep(0.05)
victim.kill()
del victim
counts = []
for batch in range(20):
    jobs = [gevent.spawn(one_connection, batch * 5 + i) for i in range(5)]
    gevent.joinall(jobs, raise_error=True)
    counts += [j.value for j in jobs]
    del jobs
token_kept = store.conn.execute("SELECT count(*) FROM used_form_tokens").fetchone()[0]
print(len(opened) - before, len(store.audit.rows()), token_kept)
"""


def test_greenlets_reuse_sqlite_connections(tmp_path: Path) -> None:
    script = tmp_path / "greenlets.py"
    script.write_text(SCRIPT, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
    opened, events, token_kept = (int(x) for x in out.stdout.split())
    assert events == 100  # every greenlet's write is there
    assert token_kept == 0  # the killed greenlet's transaction was rolled back, not reused
    assert opened <= 8  # about as many as greenlets at once, not one per greenlet (101)
