"""Benchmark of the upload link: throughput and server memory for one large file.

    .venv/bin/python bench/bench_uploads.py             # 300 MB, about 1 minute
    .venv/bin/python bench/bench_uploads.py --mb 1024   # the 1 GB case

Starts formrelay under gunicorn (`formrelay serve`'s options, 2 gevent workers) on a
fresh SQLite data folder, makes an upload link, encrypts a file of random bytes to the
practice's key with gpg (what the patient's browser does with OpenPGP.js; the
browser's encryption time is not the server's and is left out), and sends the
ciphertext the way static/upload.js does: 1 MB PATCHes at Upload-Offset with their
SHA-256, then `done`. Half-way the connection is dropped and the upload resumes from
the offset the server reports (HEAD).

The baseline, in the same run: a plain Flask endpoint under the same gunicorn options
that appends the same 1 MB chunks, unencrypted, to a file on disk (no checks, no
database). Reported: MB/s of each, the ratio, and the peak RSS (VmHWM) the busiest
worker added. Goal (issue 19): >= 0.5x the plain upload's throughput and <= 64 MB extra
RSS whatever the file size.

The request-body deadline (web/slowbody.py) reads a body in pieces, each under its own
timer, that grow with the time the client has in hand up to 64 KB: a fast upload
costs about sixteen timed reads per 1 MB chunk (it was a thousand 1 KB reads, 0.2-0.3x
the plain upload's throughput).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    PY,
    ROOT,
    SECRET,
    Server,
    free_port,
    http_get,
    make_key,
    proc_status_kb,
    start_server,
    table,
)

MB = 1 << 20


def config_toml(data: Path, key: Path, fpr: str, port: int, min_rate: int = 500) -> str:
    return f"""\
[server]
body_min_rate = {min_rate}
base_url = "http://127.0.0.1:{port}"
data_dir = "{data}"
practice_name = "Praktijk Benchmark"
practice_phone = "020 555 0101"
upload_limit_mb = 4096
upload_reserve_mb = 512

[smtp]
from_address = "formulieren@praktijk.test"
sink_dir = "{data.parent / 'mail'}"

[recipients.clinician]
email = "clinician@praktijk.test"
key_file = "{key}"
fingerprint = "{fpr}"

[forms.intake]
title = "Intake"
recipients = ["clinician"]
delivery = "hold"
upload_link = true

[[forms.intake.fields]]
name = "name"
type = "text"
label = "Naam"
"""


def plain_app(folder: Path) -> Any:
    """The baseline: chunks appended, unencrypted, to a file; nothing checked."""
    from flask import Flask, jsonify, request

    app = Flask("plain-upload")
    app.config["MAX_CONTENT_LENGTH"] = 8 * MB

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"ok": True})

    @app.route("/up/<name>", methods=["PATCH"])
    def append(name: str) -> Any:
        path = folder / name
        with path.open("ab") as fh:
            fh.write(request.get_data(cache=False))
            fh.flush()
            os.fsync(fh.fileno())
        return "", 204, {"Upload-Offset": str(path.stat().st_size)}

    return app


def serve_plain(config: Path, bind: str) -> None:
    import formrelay
    from formrelay.config import load_config
    from formrelay.ops.server import run_gunicorn

    folder = config.parent / "plain-data"
    folder.mkdir(exist_ok=True)
    app = plain_app(folder)
    formrelay.create_app = lambda *a, **kw: app  # type: ignore[assignment]
    settings = load_config(config, {"FORMRELAY_SECRET_KEY": SECRET})
    run_gunicorn(settings, bind=bind, workers=2, connections=100)


def start_plain(config: Path, log_dir: Path) -> Server:
    port = free_port()
    log = log_dir / f"plain-{port}.log"
    env = {**os.environ, "FORMRELAY_SECRET_KEY": SECRET, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen([PY, str(Path(__file__).resolve()), "serve-plain", str(config),
                                 f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    server = Server("plain", proc, port, log)
    for _ in range(300):
        try:
            if http_get(port, "/healthz", timeout=2)[0] == 200 and len(server.worker_pids()) >= 2:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"plain server not ready; see {log}")


def encrypt(src: Path, dest: Path, home: Path, fpr: str) -> None:
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-random-seed-file",
                    "--trust-model", "always", "--rfc4880", "--compress-algo", "none",
                    "--recipient", fpr, "--output", str(dest), "--encrypt", str(src)],
                   check=True, capture_output=True, timeout=3600)


def send(port: int, path: str, source: Path, *, drop_at: int = -1,
         resume: str = "") -> tuple[float, int]:
    """PATCH `source` in 1 MB chunks to `path`; at chunk `drop_at` the connection is
    closed before the answer is read, then the upload resumes where `resume` (a HEAD
    path) says. Returns (seconds, chunks)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start, offset, n = time.perf_counter(), 0, 0
    with source.open("rb") as fh:
        while chunk := fh.read(MB):
            headers = {"Upload-Offset": str(offset), "Content-Type":
                       "application/offset+octet-stream",
                       "Upload-Checksum": "sha256 " + hashlib.sha256(chunk).hexdigest()}
            conn.request("PATCH", path, body=chunk, headers=headers)
            if n == drop_at and resume:
                conn.close()  # the answer is lost; ask where the file ends
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                conn.request("HEAD", resume)
                r = conn.getresponse()
                r.read()
                offset = int(r.headers["Upload-Offset"])
                fh.seek(offset)
                n = offset // MB
                continue
            r = conn.getresponse()
            r.read()
            if r.status != 204:
                raise RuntimeError(f"chunk {n}: HTTP {r.status}")
            offset += len(chunk)
            n += 1
    conn.close()
    return time.perf_counter() - start, n


def call(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def peak(server: Server) -> dict[int, int]:
    return {pid: proc_status_kb(pid, "VmHWM") for pid in server.worker_pids()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--min-rate", type=int, default=500, help="server.body_min_rate: the "
                    "request-body deadline's smallest piece is 1 KB or this many bytes")
    args = ap.parse_args()
    import json

    with tempfile.TemporaryDirectory(prefix="formrelay-bench-") as tmp:
        root = Path(tmp)
        fpr, key = make_key(root)
        port = free_port()
        config = root / "config.toml"
        config.write_text(config_toml(root / "data", key, fpr, port, args.min_rate))
        plainfile, cipher = root / "file.bin", root / "file.pgp"
        with plainfile.open("wb") as fh:
            for _ in range(args.mb):
                fh.write(os.urandom(MB))
        encrypt(plainfile, cipher, root / "clinician-home", fpr)
        results = []
        fr = start_server("formrelay", config, root, workers=2, port=port)
        try:
            from formrelay.config import load_config
            from formrelay.localtime import utcnow
            from formrelay.store import Store
            from formrelay.uploads.links import UploadLinks

            settings = load_config(config, {"FORMRELAY_SECRET_KEY": SECRET})
            store = Store(settings.db_path, utcnow)
            made = UploadLinks(settings, store, utcnow).for_practice(
                "default", "patient@example.nl", "nl", actor="operator")
            store.close()
            token = made.link.rsplit("/u/", 1)[1]
            status, body = call(port, "POST", f"/u/{token}/files",
                                json.dumps({"size": args.mb * MB}).encode())
            assert status == 201, body
            fid = json.loads(body)["id"]
            before = peak(fr)
            seconds, chunks = send(port, f"/u/{token}/files/{fid}", cipher,
                                   drop_at=args.mb // 2, resume=f"/u/{token}/files/{fid}")
            after = peak(fr)
            status, body = call(port, "POST", f"/u/{token}/files/{fid}/done", json.dumps(
                {"length": cipher.stat().st_size, "chunks": chunks}).encode())
            assert status == 200, body
            added = max(after[p] - before[p] for p in before) / 1024
            results.append(("formrelay (ciphertext chunks, SQLite)", seconds, added))
        finally:
            fr.stop()
        plain = start_plain(config, root)
        try:
            before = peak(plain)
            seconds, _ = send(plain.port, "/up/file.bin", plainfile)
            after = peak(plain)
            added = max(after[p] - before[p] for p in before) / 1024
            results.append(("plain (unencrypted file on disk)", seconds, added))
        finally:
            plain.stop()
    size = args.mb
    rows = [[name, f"{size / s:.1f}", f"{s:.1f}", f"{rss:.1f}"] for name, s, rss in results]
    print(f"upload of {size} MB (ciphertext slightly larger), 1 MB chunks, one client, "
          f"body_min_rate {args.min_rate}")
    print(table(["server", "MB/s", "seconds", "peak RSS added (MB)"], rows))
    ratio = results[1][1] / results[0][1]
    print(f"throughput ratio formrelay/plain: {ratio:.2f}x (goal >= 0.5x); "
          f"RSS added {results[0][2]:.1f} MB (goal <= 64 MB)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve-plain":
        serve_plain(Path(sys.argv[2]), sys.argv[3])
        sys.exit(0)
    sys.exit(main())
