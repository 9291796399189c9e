"""`formrelay demo` and `formrelay check`, run as a user would run them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from formrelay.cli import cli

from .conftest import ENV, make_config_dict, write_config
from .keys import TestKey


def free_port() -> int:
    """A free port whose next port is free too (the demo serves its practice page there)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row")


def wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"demo exited: {out}")
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - loopback
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def test_demo_serves_the_form_and_the_clinician_can_decrypt(tmp_path: Path) -> None:
    port = free_port()
    folder = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMRELAY_")}
    proc = subprocess.Popen([sys.executable, "-m", "formrelay", "demo", "--dir", str(folder),
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", proc)
        page = urllib.request.urlopen(f"{base}/f/intake").read().decode()  # noqa: S310
        assert "Aanmelden als nieuwe patiënt" in page
        hidden = dict(re.findall(r'name="(_[a-z]+)"[^>]*value="([^"]*)"', page))
        time.sleep(2.1)  # the demo form asks for a minimum fill time
        body = urllib.parse.urlencode({**hidden, "name": "Anna de Vries", "birthdate":
                                       "1980-02-03", "email": "anna@example.nl",
                                       "complaint": "Rugpijn sinds één week", "consent": "y"})
        req = urllib.request.Request(f"{base}/f/intake", data=body.encode(),  # noqa: S310
                                     headers={"Accept": "application/json", "Origin": base})
        answer = urllib.request.urlopen(req).read().decode()  # noqa: S310
        ref = re.search(r"FR-\w{4}-\w{4}", answer)
        assert ref, answer
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert f"{base}/f/intake" in out and "gpg --homedir" in out
    cfg = folder / "config.toml"
    env2 = {**env, "FORMRELAY_SECRET_KEY": (folder / ".secret_key").read_text()}
    ct = subprocess.run([sys.executable, "-m", "formrelay", "--config", str(cfg), "ciphertext",
                         ref.group(0)], capture_output=True, env=env2, timeout=60)
    if ct.returncode == 0 and ct.stdout:
        plain = subprocess.run(["gpg", "--homedir", str(folder / "clinician-gnupg"), "--batch",
                                "--decrypt"], input=ct.stdout, capture_output=True, timeout=60)
        assert b"Anna de Vries" in plain.stdout
    else:  # already delivered: then the mail folder holds it, encrypted
        mails = list((folder / "mail").glob("*.eml"))
        assert mails, ct.stderr.decode()
        assert all(b"Anna de Vries" not in m.read_bytes() for m in mails)


def test_check_ok_and_errors(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    good = write_config(tmp_path / "good.toml", make_config_dict(tmp_path / "d1", keys))
    r = CliRunner().invoke(cli, ["--config", str(good), "check"], env=ENV)
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("ok")
    bad = write_config(tmp_path / "bad.toml",
                       make_config_dict(tmp_path / "d2", keys, recipients=("expired",)))
    r = CliRunner().invoke(cli, ["--config", str(bad), "check"], env=ENV)
    assert r.exit_code == 2
    assert "key expired" in r.output and "form intake is unavailable" in r.output
