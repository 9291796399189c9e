"""An answer with files (issue 19: "text, optional files"), on the server's path (no
JavaScript): the clinician attaches files to the answer, the server encrypts text and
files at once to the patient's reply key as one OpenPGP message, the patient reads the
text and downloads each file with the reference and reply code. Files are size-limited
and type-checked by their first bytes; a refused answer stores nothing. The stored
answer decrypts with gpg, rnp and Sequoia's sq given the reply key's private half (which
only the code and the server's secret together unwrap) to the same text and bytes."""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from formrelay.crypto.packets import encryption_packet
from formrelay.replies import letter

from .area import Clock, audit, cheap_hashing
from .helpers.answers import (
    clinician,
    decrypt_with_tools,
    parts,
    post_answer,
    private_key,
)
from .helpers.replies import FIELDS, read, send_form

PDF = b"%PDF-1.7\n" + secrets.token_bytes(300_000)
PNG = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(40_000)


def test_answer_with_files_read_by_the_patient_and_decrypted_by_gpg_rnp_and_sq(
        make_app: Any, tmp_path: Path, monkeypatch: Any) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock)
    client = app.test_client()
    reference, code = send_form(client, email="")
    b = clinician(app, tmp_path, clock)
    r = post_answer(b, reference, "Zie de brief en de foto.\nGroet, dr. Jansen",
                    [("brief ë.pdf", PDF), ("foto.png", PNG)])
    assert r.status_code == 302, r.get_data(as_text=True)
    assert audit(app, "answer written")[-1]["detail"].endswith("2 files")

    page = read(client, reference, code).get_data(as_text=True)
    assert "Zie de brief en de foto." in page
    assert page.count('action="/r/file') == 2 and "brief ë.pdf" in page, page
    for n, (name, data) in enumerate([("brief ë.pdf", PDF), ("foto.png", PNG)]):
        got = client.post("/r/file?lang=en", data={"reference": reference, "code": code,
                                                    "n": str(n)})
        assert got.status_code == 200 and got.data == data
        assert got.headers["Cache-Control"] == "no-store"
        assert f"filename*=UTF-8''{quote(name)}" in got.headers["Content-Disposition"]
    # a wrong code gets no file, and counts as a wrong code
    wrong = client.post("/r/file?lang=en", data={"reference": reference,
                                                 "code": "AAAA-AAAA-AAAA", "n": "0"})
    assert wrong.status_code == 403 and wrong.data != PDF
    assert client.post("/r/file?lang=en", data={"reference": reference, "code": code,
                                                 "n": "2"}).status_code == 404

    stored = app.extensions["formrelay"].store.replies.get(reference)["answer"]
    assert encryption_packet(stored) == "SEIPD v1"
    assert PDF[9:200] not in stored and b"Zie de brief" not in stored
    decrypted = decrypt_with_tools(private_key(app, reference, code), stored, tmp_path / "t")
    assert set(decrypted) == {"gpg", "rnp", "sq"}
    for tool, plain in decrypted.items():
        text, files = parts(plain)
        assert text.startswith("Zie de brief en de foto."), tool
        assert {n: hashlib.sha256(d).hexdigest() for n, d in files.items()} == {
            "brief ë.pdf": hashlib.sha256(PDF).hexdigest(),
            "foto.png": hashlib.sha256(PNG).hexdigest()}, tool


@pytest.mark.parametrize(("files", "why"), [
    ([("brief.pdf", b"MZ\x90\x00 not a pdf")], "brief.pdf is refused"),
    ([("script.exe", b"MZ\x90\x00")], "script.exe is refused"),
    ([(f"f{i}.txt", b"tekst\n") for i in range(letter.MAX_FILES + 1)],
     f"at most {letter.MAX_FILES} files"),
    ([("a.pdf", b"%PDF-1.7\n" + b"x" * (letter.MAX_FILES_BYTES // 2)),
      ("b.pdf", b"%PDF-1.7\n" + b"x" * (letter.MAX_FILES_BYTES // 2))], "at most 10 MB"),
])
def test_refused_files_store_no_answer(make_app: Any, tmp_path: Path, monkeypatch: Any,
                                       files: list[tuple[str, bytes]], why: str) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock,
                   server={"max_request_mb": 40})
    client = app.test_client()
    reference, code = send_form(client, email="")
    b = clinician(app, tmp_path, clock)
    r = post_answer(b, reference, "Het antwoord", files)
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and why in html, html
    assert 'id="answer"' in html  # the page again, to correct
    row = app.extensions["formrelay"].store.replies.get(reference)
    assert row["state"] == "waiting" and row["answer"] is None
    assert not audit(app, "answer written")
    assert "not answered yet" in read(client, reference, code).get_data(as_text=True)


def test_a_file_that_is_not_what_its_name_says_is_not_handed_out(
        make_app: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """An answer encrypted elsewhere (a browser the server cannot check) with a file
    that is not what its name says: the patient gets the text and the good file, and
    is told one was held back."""
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock)
    client = app.test_client()
    reference, code = send_form(client, email="")
    s = app.extensions["formrelay"]
    row = s.store.replies.get(reference)
    mime = letter.compose("Tekst", [letter.AnswerFile("goed.pdf", PDF),
                                    letter.AnswerFile("fout.pdf", b"MZ\x90\x00 exe")])
    sealed = letter.seal(row["public_key"], mime, s.settings.tmp_dir, 30)
    assert s.store.replies.store_answer(reference, sealed, "user:anna", clock())
    page = read(client, reference, code).get_data(as_text=True)
    assert page.count('action="/r/file') == 1 and "goed.pdf" in page and "fout.pdf" not in page
    assert re.search(r'id="answer-refused">[^<]*1 more file', page), page
