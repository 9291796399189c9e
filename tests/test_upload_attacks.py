"""Upload links attacked through the real server (`formrelay serve`): bad bytes in the
protocol's headers, a file id of one link used with another's token, two sessions'
chunks interleaved, and parallel chunks that together pass the session's limit. Every
refusal is a clear 4xx (never a 500), and what was stored stays whole and decrypts."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from formrelay.config import load_config
from formrelay.localtime import utcnow
from formrelay.settings import Settings
from formrelay.store import Store
from formrelay.uploads.links import UploadLinks

from .conftest import ENV, make_config_dict, write_config
from .helpers.servers import _free_port, serve
from .keys import TestKey, gpg_decrypt

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

KB = 1 << 10
MAX_FILES = 100  # files one upload session may start (uploads/receive.py)


def encrypt(key: TestKey, plain: bytes) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(key.home), "--batch", "--trust-model",
                           "always", "--rfc4880", "--compress-algo", "none", "-r",
                           key.fingerprint, "--encrypt"], input=plain, capture_output=True,
                          check=True, timeout=60).stdout


def call(port: int, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> Any:
    """One request; header values go out as latin-1 bytes, as any client may send."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, path)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            conn.putheader(name, value.encode("latin-1"))
        conn.endheaders(body)
        r = conn.getresponse()
        r.data = r.read()
    finally:
        conn.close()
    return r


@contextmanager
def serving(tmp_path: Path, keys: dict[str, TestKey]) -> Iterator[tuple[int, Settings]]:
    port = _free_port()
    cfg = make_config_dict(tmp_path / "data", keys, server={
        "base_url": f"http://127.0.0.1:{port}", "upload_limit_mb": 1,
        "rate_limit_ip": "100000/minute"})
    path = write_config(tmp_path / "config.toml", cfg)
    proc = serve(path, port, tmp_path / "serve.log")
    try:
        yield port, load_config(path, ENV)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def new_link(settings: Settings) -> str:
    store = Store(settings.db_path, utcnow, url=settings.server.database_url)
    try:
        made = UploadLinks(settings, store, utcnow).for_practice(
            "default", "zoe@example.nl", "nl", actor="operator")
    finally:
        store.close()
    return made.link.rsplit("/u/", 1)[1]


def create(port: int, token: str, size: int) -> str:
    r = call(port, "POST", f"/u/{token}/files", json.dumps({"size": size}).encode(),
             {"Content-Type": "application/json"})
    assert r.status == 201, r.data
    return f"/u/{token}/files/{json.loads(r.data)['id']}"


def patch(port: int, files: str, offset: int, chunk: bytes, **headers: str) -> Any:
    return call(port, "PATCH", files, chunk, {
        "Upload-Offset": str(offset),
        "Upload-Checksum": "sha256 " + hashlib.sha256(chunk).hexdigest(), **headers})


def done(port: int, files: str, length: int, chunks: int) -> Any:
    return call(port, "POST", f"{files}/done", json.dumps(
        {"length": length, "chunks": chunks}).encode(), {"Content-Type": "application/json"})


def stored(settings: Settings, files: str) -> bytes:
    store = Store(settings.db_path, utcnow, url=settings.server.database_url)
    try:
        return b"".join(store.uploads.chunks(files.rsplit("/", 1)[1]))
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           keys: dict[str, TestKey]) -> Iterator[tuple[int, Settings]]:
    with serving(tmp_path_factory.mktemp("attack"), keys) as s:
        yield s


BAD_HEADERS = [
    {"Upload-Checksum": "sha256 " + "é" * 64},  # latin-1 bytes: not a hex digest
    {"Upload-Checksum": "sha256 \u00e9"},
    {"Upload-Checksum": "sha256 " + "0" * 63 + "\x00"},
    {"Upload-Checksum": "sha256 " + "ab" * 5000},
    {"Upload-Checksum": "sh\u00e4256 " + "0" * 64},
    {"Upload-Checksum": "sha256 \u00ad" + "0" * 64},  # a soft hyphen
    {"Upload-Offset": "\u00b2"},  # a superscript two: a digit to str.isdigit
    {"Upload-Offset": "9" * 5000},
    {"Upload-Offset": "-1"},
    {"Upload-Offset": "0\x00"},
    {"Upload-Offset": "1e3"},
]


@pytest.mark.parametrize("bad", BAD_HEADERS, ids=range(len(BAD_HEADERS)))
def test_bad_bytes_in_chunk_headers_are_refused_and_the_upload_goes_on(
        server: tuple[int, Settings], keys: dict[str, TestKey], bad: dict[str, str]) -> None:
    port, settings = server
    token = new_link(settings)
    plain = os.urandom(20 * KB)
    ct = encrypt(keys["alice"], plain)
    files = create(port, token, len(plain))
    r = patch(port, files, 0, ct, **bad)
    assert 400 <= r.status < 500, (r.status, r.data[:300])
    if r.headers.get("Content-Type") == "application/json":  # else refused by the HTTP layer
        assert json.loads(r.data)["ok"] is False
    # nothing half-stored: the same chunk, sent right, completes the file
    head = call(port, "HEAD", files)
    if head.status == 200:  # a refused first chunk may have ended the file; else resume
        assert head.headers["Upload-Offset"] == "0"
    else:
        files = create(port, token, len(plain))
    assert patch(port, files, 0, ct).status == 204
    assert done(port, files, len(ct), 1).status == 200
    assert gpg_decrypt(keys["alice"], stored(settings, files)) == plain


def test_a_file_of_one_link_takes_nothing_through_another_links_token(
        server: tuple[int, Settings], keys: dict[str, TestKey]) -> None:
    port, settings = server
    mine, other = new_link(settings), new_link(settings)
    plain = os.urandom(20 * KB)
    ct = encrypt(keys["alice"], plain)
    files = create(port, other, len(plain))
    foreign = files.replace(other, mine)
    for method, path, body in (("PATCH", foreign, ct), ("HEAD", foreign, b""),
                               ("POST", f"{foreign}/done", json.dumps(
                                   {"length": 0, "chunks": 0}).encode())):
        r = call(port, method, path, body, {"Upload-Offset": "0",
                                            "Content-Type": "application/json"})
        assert r.status == 404, (method, r.status, r.data[:200])
    # the other link's own upload is untouched and completes
    assert call(port, "HEAD", files).headers["Upload-Offset"] == "0"
    assert patch(port, files, 0, ct).status == 204
    assert done(port, files, len(ct), 1).status == 200
    assert gpg_decrypt(keys["alice"], stored(settings, files)) == plain


def test_two_sessions_interleaved_and_a_lying_offset(
        server: tuple[int, Settings], keys: dict[str, TestKey]) -> None:
    port, settings = server
    plains = [os.urandom(300 * KB), os.urandom(300 * KB)]
    cts = [encrypt(keys["alice"], p) for p in plains]
    uploads = [create(port, new_link(settings), len(p)) for p in plains]
    step = 64 * KB
    offsets = [0, 0]
    n = [0, 0]
    while any(offsets[i] < len(cts[i]) for i in (0, 1)):
        for i in (0, 1):
            if offsets[i] >= len(cts[i]):
                continue
            chunk = cts[i][offsets[i]:offsets[i] + step]
            for lie in (offsets[i] + 1, offsets[i] - 1, offsets[i] + len(chunk)):
                if lie > 0:  # a chunk claimed for a place it does not fit
                    r = patch(port, uploads[i], lie, chunk)
                    assert r.status == 409 and int(r.headers["Upload-Offset"]) == offsets[i]
            r = patch(port, uploads[i], offsets[i], chunk)
            assert r.status == 204, r.data
            offsets[i] += len(chunk)
            n[i] += 1
    # a lying total deletes the file, it does not complete it
    wrong = create(port, new_link(settings), len(plains[0]))
    assert patch(port, wrong, 0, cts[0][:step]).status == 204
    assert done(port, wrong, len(cts[0]), 1).status == 422
    assert call(port, "HEAD", wrong).status == 404
    for i in (0, 1):
        assert done(port, uploads[i], len(cts[i]), n[i]).status == 200
        assert gpg_decrypt(keys["alice"], stored(settings, uploads[i])) == plains[i]


def test_parallel_chunks_never_pass_the_session_limit(
        server: tuple[int, Settings], keys: dict[str, TestKey]) -> None:
    """upload_limit_mb = 1: eight files of 600 KB started at once in one session, their
    first chunks sent in parallel. At most one fits; the others are refused (413) and
    their partial data deleted."""
    port, settings = server
    token = new_link(settings)
    plain = os.urandom(600 * KB)
    ct = encrypt(keys["alice"], plain)
    uploads = [create(port, token, len(plain)) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda f: patch(port, f, 0, ct[:700 * KB]).status, uploads))
    assert sorted(answers) == [204] + [413] * 7, answers
    store = Store(settings.db_path, utcnow, url=settings.server.database_url)
    try:
        link = store.uploads.link(token.split(".", 1)[0])
        assert link is not None and link["used_bytes"] == min(len(ct), 700 * KB)
    finally:
        store.close()


def test_one_chunk_sent_eight_times_at_once_is_stored_once(
        server: tuple[int, Settings], keys: dict[str, TestKey]) -> None:
    """A browser retrying on several connections: the same chunk at the same offset,
    in parallel. One is stored; the others learn where the file ends (409)."""
    port, settings = server
    plain = os.urandom(200 * KB)
    ct = encrypt(keys["alice"], plain)
    files = create(port, new_link(settings), len(plain))
    half = len(ct) // 2
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: patch(port, files, 0, ct[:half]), range(8)))
    assert sorted(r.status for r in answers) == [204] + [409] * 7, \
        [(r.status, r.data[:100]) for r in answers]
    assert all(int(r.headers["Upload-Offset"]) == half for r in answers)
    assert patch(port, files, half, ct[half:]).status == 204
    assert done(port, files, len(ct), 2).status == 200
    assert gpg_decrypt(keys["alice"], stored(settings, files)) == plain


def test_an_upload_goes_on_through_recycled_workers_and_a_reload(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """Workers recycled every 15 requests (the chunks themselves recycle them), every
    worker replaced half-way, then SIGHUP with a changed practice file: each chunk
    lands once, in order, and the file decrypts to the bytes sent."""
    from .helpers.recycle import _booted, configure, practice, recycle_every_worker
    from .helpers.recycle import serve as serve_recycling
    from .helpers.reload import until

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    config = configure(tmp_path, keys, base,
                       zuid=practice("Praktijk Zuid", "dr-b", keys["bob"], "b-hold"))
    settings = load_config(config, ENV)
    plain = os.urandom(900 * KB)
    ct = encrypt(keys["alice"], plain)
    step, offset, n = 32 * KB, 0, 0
    with serve_recycling(tmp_path, config, port) as (proc, log):
        files = create(port, new_link(settings), len(plain))

        def send(upto: int) -> None:
            nonlocal offset, n
            while offset < min(upto, len(ct)):
                chunk = ct[offset:offset + step]
                r = patch(port, files, offset, chunk)
                assert r.status == 204, (r.status, r.data[:200], log.read_text()[-2000:])
                offset += len(chunk)
                n += 1

        send(len(ct) // 3)
        recycle_every_worker(base, proc, log)
        send(2 * len(ct) // 3)
        zuid = tmp_path / "practices" / "zuid.toml"
        zuid.write_text(zuid.read_text().replace("Aanmelden", "Aanmelden (nieuw)"))
        booted = len(_booted(log))
        proc.send_signal(signal.SIGHUP)
        until(lambda: len(_booted(log)) >= booted + 2, "new workers after SIGHUP", log)
        send(len(ct))
        assert done(port, files, len(ct), n).status == 200
        assert proc.poll() is None
    assert gpg_decrypt(keys["alice"], stored(settings, files)) == plain


def test_one_link_cannot_start_files_without_end(
        server: tuple[int, Settings], keys: dict[str, TestKey]) -> None:
    """Each started file is a row and an audit entry: a link's holder starting empty
    files in a loop is stopped at MAX_FILES, and the stopped starts write nothing."""
    port, settings = server
    token = new_link(settings)
    statuses = [call(port, "POST", f"/u/{token}/files", b'{"size": 1}',
                     {"Content-Type": "application/json"}).status
                for _ in range(MAX_FILES + 20)]
    assert statuses == [201] * MAX_FILES + [429] * 20, statuses
    store = Store(settings.db_path, utcnow, url=settings.server.database_url)
    try:
        link_id = token.split(".", 1)[0]
        assert len(store.uploads.files_of(link_id=link_id, state="receiving")) == MAX_FILES
        reference = store.uploads.link(link_id)["reference"]  # type: ignore[index]
        assert len(store.audit.rows(reference)) <= MAX_FILES + 2  # invited, started ...
    finally:
        store.close()
