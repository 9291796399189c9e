"""The upload page and its chunked protocol (issue 19, part 2), through the Flask test
client with real gpg and rnp: ciphertext in chunks, resumed after a lost chunk,
refusals that delete what arrived, the plain form post encrypted on the server, two
app instances on one database, the clinician's download decrypting to the same bytes."""

from __future__ import annotations

import hashlib
import io
import re
import secrets
from pathlib import Path
from typing import Any

import pytest

from .area import Clock, audit, cheap_hashing
from .canary import leaks, start_clock
from .conftest import ENV, encode_multipart, make_config_dict, write_config
from .helpers.answers import sq_decrypt
from .helpers.uploads import (
    MB,
    clinician,
    create,
    deliver,
    encrypt_binary,
    new_link,
    patch,
    send_file,
)
from .keys import TestKey, gpg_decrypt, packet_tags, rnp_decrypt

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def test_page_carries_the_keys_types_and_limit(make_app: Any,
                                               keys: dict[str, TestKey]) -> None:
    app = make_app(server={"upload_limit_mb": 300})
    token = new_link(app)
    client = app.test_client()
    r = client.get(f"/u/{token}?lang=en")
    html = r.get_data(as_text=True)
    assert r.status_code == 200, html
    assert "BEGIN PGP PUBLIC KEY BLOCK" in html and "Praktijk Test" in html
    assert "openpgp-6.3.2.min.js" in html and "upload.js" in html
    assert "Up to 300 MB in total" in html and "pdf" in html
    assert 'enctype="multipart/form-data"' in html  # the no-JavaScript way
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert "Documenten sturen" in client.get(f"/u/{token}").get_data(as_text=True)


def test_chunks_resume_after_a_lost_one_and_decrypt_with_gpg_and_rnp(
        make_app: Any, keys: dict[str, TestKey], tmp_path: Path, monkeypatch: Any) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(clock=clock)
    token = new_link(app)
    client = app.test_client()
    plain = b"%PDF-1.7\n" + secrets.token_bytes(3 * MB + 12345)
    ct = encrypt_binary(app, plain, [keys["alice"].fingerprint])
    fid = create(client, token, len(plain))
    assert patch(client, token, fid, 0, ct[:MB]).status_code == 204
    # the connection dropped after the second chunk arrived: the browser sends it again
    assert patch(client, token, fid, MB, ct[MB:2 * MB]).status_code == 204
    again = patch(client, token, fid, MB, ct[MB:2 * MB])
    assert again.status_code == 409 and again.headers["Upload-Offset"] == str(2 * MB)
    # a chunk that skips ahead is refused with where to resume
    ahead = patch(client, token, fid, 3 * MB, ct[3 * MB:])
    assert ahead.status_code == 409 and ahead.get_json()["offset"] == 2 * MB
    head = client.head(f"/u/{token}/files/{fid}")
    assert head.headers["Upload-Offset"] == str(2 * MB)
    # damaged on the way: refused, nothing stored, sent again
    bad = patch(client, token, fid, 2 * MB, ct[2 * MB:3 * MB], checksum="0" * 64)
    assert bad.status_code == 460
    for off in (2 * MB, 3 * MB):
        assert patch(client, token, fid, off, ct[off:off + MB]).status_code == 204
    r = client.post(f"/u/{token}/files/{fid}/done", json={"length": len(ct), "chunks": 4})
    assert r.status_code == 200, r.get_data(as_text=True)
    second = send_file(client, token, encrypt_binary(app, b"%PDF-1.4 brief", [
        keys["alice"].fingerprint]))
    done = client.post(f"/u/{token}/done")
    assert done.status_code == 200 and "2" in done.get_data(as_text=True)
    # the link is used: every way in answers "used, call the practice"
    for used in (client.get(f"/u/{token}"), client.post(f"/u/{token}/done")):
        assert used.status_code == 410 and "020 555 0101" in used.get_data(as_text=True)
    assert client.post(f"/u/{token}/files", json={"size": 1}).status_code == 410

    b = clinician(app, tmp_path, clock)
    listing = b.get("/clinician/uploads/").get_data(as_text=True)
    assert fid in listing and second in listing
    got = b.get(f"/clinician/uploads/{fid}")
    assert got.status_code == 200 and got.data == ct
    assert hashlib.sha256(gpg_decrypt(keys["alice"], got.data)).digest() == \
        hashlib.sha256(plain).digest()
    assert hashlib.sha256(rnp_decrypt(keys["alice"], got.data)).digest() == \
        hashlib.sha256(plain).digest()
    assert keys["alice"].secret is not None  # and Sequoia's sq reads it too
    assert hashlib.sha256(sq_decrypt(keys["alice"].secret, got.data)).digest() == \
        hashlib.sha256(plain).digest()
    assert any("mdc_method" in t for t in packet_tags(keys["alice"], got.data))
    assert audit(app, "upload received") and audit(app, "upload downloaded", "ok")
    # someone else's account cannot fetch it, and learns nothing
    assert b.get("/clinician/uploads/nope").status_code == 404


def test_refusals_delete_what_arrived_and_are_audited(make_app: Any,
                                                      keys: dict[str, TestKey]) -> None:
    app = make_app(server={"upload_limit_mb": 2})
    token = new_link(app)  # to alice only; bob's key is known to gpg, not to the link
    app.extensions["formrelay"].keyring.gpg.import_keys(keys["bob"].public.read_text())
    client = app.test_client()
    store = app.extensions["formrelay"].store
    alice, bob = keys["alice"].fingerprint, keys["bob"].fingerprint
    # not OpenPGP, and OpenPGP to the wrong key: refused at the first chunk
    for data in (b"%PDF-1.4 in clear " * 100, encrypt_binary(app, b"x" * 100, [bob]),
                 encrypt_binary(app, b"x" * 100, [alice, bob])):
        fid = create(client, token, len(data))
        r = patch(client, token, fid, 0, data)
        assert r.status_code == 422 and "niet versleuteld voor de praktijk" in r.get_json()["error"]
        assert store.uploads.file(fid)["state"] == "deleted"
        assert list(store.uploads.chunks(fid)) == []
    # over the session's limit: announced, or found out chunk by chunk
    r = client.post(f"/u/{token}/files", json={"size": 3 * MB})
    assert r.status_code == 413 and "2 MB" in r.get_json()["error"]
    big = encrypt_binary(app, secrets.token_bytes(3 * MB), [alice])
    fid = create(client, token, 10)
    assert patch(client, token, fid, 0, big[:MB]).status_code == 204
    assert patch(client, token, fid, MB, big[MB:2 * MB]).status_code == 204
    r = patch(client, token, fid, 2 * MB, big[2 * MB:3 * MB])
    assert r.status_code == 413
    assert store.uploads.file(fid)["state"] == "deleted" and not list(store.uploads.chunks(fid))
    assert store.uploads.link(token.split(".")[0])["used_bytes"] == 0  # given back
    # chunks that do not add up
    small = encrypt_binary(app, b"%PDF-1.4 x", [alice])
    fid = create(client, token, len(small))
    assert patch(client, token, fid, 0, small).status_code == 204
    r = client.post(f"/u/{token}/files/{fid}/done", json={"length": len(small) + 1,
                                                          "chunks": 1})
    assert r.status_code == 422 and "kloppen niet" in r.get_json()["error"]
    assert store.uploads.file(fid)["state"] == "deleted"
    refused = [a["detail"] for a in audit(app, "upload refused", "refused")]
    assert len(refused) == 6, refused
    assert any("do not add up" in d for d in refused)
    # forged links and files learn nothing
    forged = "AAAAAAAAAAAAAAAAAAAAAA." + "B" * 43
    assert client.post(f"/u/{forged}/files", json={"size": 1}).status_code == 404
    assert client.head(f"/u/{token}/files/nope").status_code == 404


def test_disk_reserve_refuses_new_uploads_with_503(make_app: Any,
                                                   keys: dict[str, TestKey]) -> None:
    app = make_app(server={"upload_reserve_mb": 1 << 40})  # more than any disk has
    token = new_link(app)
    client = app.test_client()
    r = client.get(f"/u/{token}?lang=en")
    assert r.status_code == 503
    html = r.get_data(as_text=True)
    assert "call" in html.lower() and "020 555 0101" in html
    assert client.post(f"/u/{token}/files", json={"size": 10}).status_code == 503
    # the link itself is untouched: it works once there is room again
    assert app.extensions["formrelay"].store.uploads.link(token.split(".")[0])["state"] == "open"


def test_plain_form_post_is_encrypted_on_the_server(make_app: Any, keys: dict[str, TestKey],
                                                    tmp_path: Path, logs: Any) -> None:
    since = start_clock()
    mark = "CANARY-" + secrets.token_hex(8)
    app = make_app()
    token = new_link(app)
    client = app.test_client()
    pdf = f"%PDF-1.4 verwijsbrief {mark}".encode()
    body = encode_multipart({"files": [(io.BytesIO(pdf), "brief.pdf", "application/pdf")]})
    r = client.post(f"/u/{token}?lang=en", data=body,
                    content_type="multipart/form-data; boundary=frtestboundary")
    assert r.status_code == 200 and "Received: 1 file(s)" in r.get_data(as_text=True)
    # a PNG named .pdf is refused, nothing stored
    body = encode_multipart({"files": [(io.BytesIO(b"\x89PNG\r\n\x1a\n...."), "scan.pdf")]})
    r = client.post(f"/u/{token}?lang=en", data=body,
                    content_type="multipart/form-data; boundary=frtestboundary")
    assert r.status_code == 415 and "pdf" in r.get_data(as_text=True)
    store = app.extensions["formrelay"].store
    files = store.uploads.files_of(link_id=token.split(".")[0])
    assert len(files) == 1 and files[0]["how"] == "form"
    ct = b"".join(store.uploads.chunks(files[0]["id"]))
    assert gpg_decrypt(keys["alice"], ct) == pdf == rnp_decrypt(keys["alice"], ct)
    data_dir = app.extensions["formrelay"].settings.data_dir
    texts = [r.getMessage() for r in logs.records]
    assert not leaks(mark, roots=[data_dir, tmp_path], texts=texts, since=since)


def test_notice_to_recipients_names_only_reference_and_count(make_app: Any, tmp_path: Path,
                                                             keys: dict[str, TestKey]) -> None:
    app = make_app()
    token = new_link(app)
    client = app.test_client()
    send_file(client, token, encrypt_binary(app, b"%PDF-1.4 a", [keys["alice"].fingerprint]))
    client.post(f"/u/{token}/done")
    deliver(app)
    sent = sorted((tmp_path / "mail").glob("*.eml"))
    notices = [p.read_text() for p in sent if "alice@praktijk.test" in p.read_text()]
    assert len(notices) == 1
    assert "New documents for FR-" in notices[0] and "1 file(s)" in notices[0]
    assert "/clinician/uploads" in notices[0]


def test_two_instances_share_one_upload(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """Chunks of one file alternate between two app instances on the same database."""
    from formrelay import create_app

    cfg = make_config_dict(tmp_path / "data", keys)
    path = write_config(tmp_path / "config.toml", cfg)
    one, two = create_app(path, environ=ENV), create_app(path, environ=ENV)
    token = new_link(one)
    plain = b"%PDF-1.7 " + secrets.token_bytes(2 * MB + 7)
    ct = encrypt_binary(one, plain, [keys["alice"].fingerprint])
    a, b = one.test_client(), two.test_client()
    fid = create(a, token, len(plain))
    offs = list(range(0, len(ct), MB))
    for i, off in enumerate(offs):
        assert patch((a, b)[i % 2], token, fid, off, ct[off:off + MB]).status_code == 204
    r = b.post(f"/u/{token}/files/{fid}/done", json={"length": len(ct), "chunks": len(offs)})
    assert r.status_code == 200
    got = b"".join(two.extensions["formrelay"].store.uploads.chunks(fid))
    assert gpg_decrypt(keys["alice"], got) == plain
    assert re.fullmatch(r"[A-Za-z0-9_-]+", fid)


def test_documents_are_deleted_after_their_retention(make_app: Any, tmp_path: Path,
                                                     keys: dict[str, TestKey]) -> None:
    from datetime import timedelta

    from formrelay.uploads.held import purge

    clock = Clock()
    app = make_app(clock=clock)
    token = new_link(app)
    fid = send_file(app.test_client(), token, encrypt_binary(app, b"%PDF-1.4 a", [
        keys["alice"].fingerprint]))
    s = app.extensions["formrelay"]
    assert purge(s.settings, s.store, clock.now + timedelta(days=29)) == 0
    assert purge(s.settings, s.store, clock.now + timedelta(days=30, seconds=1)) == 1
    assert s.store.uploads.file(fid)["state"] == "deleted"
    assert list(s.store.uploads.chunks(fid)) == []
    assert "past 30 days' retention" in audit(app, "upload deleted")[0]["detail"]


def test_clinician_asks_for_documents_in_the_browser(make_app: Any, tmp_path: Path,
                                                     monkeypatch: Any) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(clock=clock)
    b = clinician(app, tmp_path, clock)
    page = b.get("/clinician/uploads/").get_data(as_text=True)
    assert 'action="/clinician/uploads/invite"' in page
    r = b.post("/clinician/uploads/invite", {"reference": "", "email": "nieuw@example.nl",
                                             "lang": "en"})
    assert r.status_code == 302, r.get_data(as_text=True)
    flashed = b.get("/clinician/uploads/").get_data(as_text=True)
    ref = re.search(r"Upload link sent for (FR-[A-Z0-9-]+)", flashed) or \
        re.search(r"Uploadlink verstuurd voor (FR-[A-Z0-9-]+)", flashed)
    assert ref, flashed
    row = app.extensions["formrelay"].store.uploads.links_of(ref.group(1))[0]
    assert row["asked_by"] == "user:anna" and row["practice"] == "default"
    # a reference that is not the clinician's, and a bad address: refused, nothing sent
    for data in ({"reference": "FR-AAAA-AAAA", "email": "a@example.nl"},
                 {"reference": "", "email": "=?utf-8?q?x?=@example.nl"}):
        r = b.post("/clinician/uploads/invite", data)
        assert r.status_code == 400 and 'id="ask-error"' in r.get_data(as_text=True)
    kinds = [m["kind"] for m in app.extensions["formrelay"].store.outbox.rows()]
    assert kinds.count("upload_link") == 1


def test_upload_link_secrets_never_reach_a_log() -> None:
    from formrelay.logs import redact, redact_path

    token = "wbNN8EkMncBSUIuJMYCztw.Sh-alkUQ2j_CxYuWYGscckp1DPEf-Thx-tGQQWUjDgs"
    line = f'"PATCH /u/{token}/files/YDIe96yH61nl?lang=nl HTTP/1.1" 204 -'
    assert token.split(".")[1] not in redact(line)
    assert "/u/[redacted]/files/YDIe96yH61nl" in redact(line)
    assert redact_path(f"/u/{token}") == "/u/[redacted]"
    assert redact_path("/u/ask") == "/u/ask"


def test_an_unfinished_file_is_dropped_to_start_again_a_finished_one_is_not(
        make_app: Any, keys: dict[str, TestKey], monkeypatch: Any) -> None:
    """What the page does after a reload: DELETE the cut-off file (its bytes are given
    back to the session's limit, audited); a finished file, another link's file or a
    made-up id cannot be dropped, and nothing of theirs is lost."""
    cheap_hashing(monkeypatch)
    app = make_app()
    token, other = new_link(app), new_link(app)
    client = app.test_client()
    store = app.extensions["formrelay"].store
    whole = encrypt_binary(app, b"%PDF-1.4 brief", [keys["alice"].fingerprint])
    kept = send_file(client, token, whole)
    ct = encrypt_binary(app, b"%PDF-1.7\n" + secrets.token_bytes(2 * MB),
                        [keys["alice"].fingerprint])
    cut = create(client, token, len(ct))
    assert patch(client, token, cut, 0, ct[:MB]).status_code == 204
    link_id = token.split(".")[0]
    used = store.uploads.link(link_id)["used_bytes"]
    for refused in (client.delete(f"/u/{token}/files/{kept}"),  # finished: the practice's
                    client.delete(f"/u/{other}/files/{cut}"),  # another link's
                    client.delete(f"/u/{token}/files/nope")):
        assert refused.status_code == 404
    assert b"".join(store.uploads.chunks(kept)) == whole
    assert client.head(f"/u/{token}/files/{cut}").headers["Upload-Offset"] == str(MB)
    assert client.delete(f"/u/{token}/files/{cut}").status_code == 204
    assert store.uploads.link(link_id)["used_bytes"] == used - MB
    assert patch(client, token, cut, MB, ct[MB:2 * MB]).status_code == 404
    assert list(store.uploads.chunks(cut)) == []
    assert [e for e in audit(app, "upload deleted") if "page reload" in e["detail"]]
    # sent again from its start, as a new file, it completes
    again = send_file(client, token, ct)
    assert b"".join(store.uploads.chunks(again)) == ct
