"""An upload survives `kill -9` of the real server (`formrelay serve`, gunicorn) half-way:
what was stored is ciphertext only, the session resumes after a restart from the
offset the server reports, and the file decrypts to the same bytes."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from formrelay.config import load_config
from formrelay.localtime import utcnow
from formrelay.store import Store
from formrelay.uploads.links import UploadLinks

from .canary import leaks
from .conftest import ENV, make_config_dict, write_config
from .helpers.servers import _free_port, serve
from .keys import TestKey, gpg_decrypt

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

MB = 1 << 20


def call(port: int, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        r.data = r.read()
    finally:
        conn.close()
    return r


def test_kill_9_mid_upload_resumes_after_restart(tmp_path: Path,
                                                 keys: dict[str, TestKey]) -> None:
    port = _free_port()
    cfg = make_config_dict(tmp_path / "data", keys,
                           server={"base_url": f"http://127.0.0.1:{port}"})
    path = write_config(tmp_path / "config.toml", cfg)
    settings = load_config(path, ENV)
    mark = "CANARY-" + os.urandom(8).hex()
    plain = mark.encode() + os.urandom(5 * MB)
    gpg = subprocess.run(["gpg", "--homedir", str(keys["alice"].home), "--batch",
                          "--trust-model", "always", "--rfc4880", "--compress-algo", "none",
                          "-r", keys["alice"].fingerprint, "--encrypt"], input=plain,
                         capture_output=True, check=True, timeout=60)
    ct = gpg.stdout
    log = tmp_path / "serve.log"
    proc = serve(path, port, log)
    try:
        store = Store(settings.db_path, utcnow, url=settings.server.database_url)
        made = UploadLinks(settings, store, utcnow).for_practice(
            "default", "zoe@example.nl", "nl", actor="operator")
        store.close()
        token = made.link.rsplit("/u/", 1)[1]
        r = call(port, "POST", f"/u/{token}/files", json.dumps({"size": len(plain)}).encode(),
                 {"Content-Type": "application/json"})
        assert r.status == 201, r.data
        files = f"/u/{token}/files/{json.loads(r.data)['id']}"

        def patch(off: int) -> Any:
            chunk = ct[off:off + MB]
            return call(port, "PATCH", files, chunk, {
                "Upload-Offset": str(off),
                "Upload-Checksum": "sha256 " + hashlib.sha256(chunk).hexdigest()})

        for off in (0, MB, 2 * MB):
            assert patch(off).status == 204
        os.killpg(proc.pid, signal.SIGKILL)  # the whole server, mid-upload
        proc.wait(timeout=30)
        assert not leaks(mark, roots=[settings.data_dir])  # only ciphertext was stored
        proc = serve(path, port, log)
        head = call(port, "HEAD", files)
        assert head.status == 200 and int(head.headers["Upload-Offset"]) == 3 * MB
        offs = list(range(3 * MB, len(ct), MB))
        for off in offs:
            assert patch(off).status == 204
        done = call(port, "POST", f"{files}/done", json.dumps(
            {"length": len(ct), "chunks": 3 + len(offs)}).encode(),
            {"Content-Type": "application/json"})
        assert done.status == 200, done.data
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    store = Store(settings.db_path, utcnow, url=settings.server.database_url)
    try:
        fid = files.rsplit("/", 1)[1]
        assert gpg_decrypt(keys["alice"], b"".join(store.uploads.chunks(fid))) == plain
    finally:
        store.close()
