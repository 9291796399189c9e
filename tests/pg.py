"""A real PostgreSQL for the tests, started and stopped by the test session itself.

Debian's `postgresql` package (scripts/setup.sh --test) provides initdb and pg_ctl; the
cluster lives in a fresh temp folder, listens on a free loopback port (and a unix socket
in that folder), trusts loopback logins and is thrown away at the end. PostgreSQL
refuses to run as root, so as root (CI) it runs as the `postgres` user in a folder that
user owns. Each test that uses it gets its own database, copied from a migrated template.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

TEST_DATABASE_ENV = "FORMRELAY_TEST_DATABASE"  # "postgresql": every test config uses it
TEMPLATE = "formrelay_template"


def bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self) -> None:
        bins = bindir()
        if bins is None:
            raise FileNotFoundError("PostgreSQL's initdb is not installed (Debian: apt-get "
                                    "install postgresql, or scripts/setup.sh --test)")
        self.bins = bins
        self.root = Path(tempfile.mkdtemp(prefix="formrelay-pg-"))
        self.user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            pg = pwd.getpwnam("postgres")
            os.chown(self.root, pg.pw_uid, pg.pw_gid)
            self.user = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self.names = itertools.count(1)
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=400 -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")
        try:
            self.admin("CREATE DATABASE " + TEMPLATE)
            from formrelay.store import Store
            Store(self.root / "unused.db", url=self.url(TEMPLATE)).close()  # migrated once
        except BaseException:
            self.stop()
            raise

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.user, str(self.bins / tool), *args], capture_output=True,
                              text=True, timeout=120, check=False, cwd=self.root)
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.encode())

    def new_database(self) -> str:
        """A fresh, migrated database of its own; returns its URL."""
        name = f"t{os.getpid()}_{next(self.names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def drop(self, url: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
