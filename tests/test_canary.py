"""Design non-negotiable 1: the plaintext exists only in the request's memory.

A unique canary is submitted in every field type; afterwards the database file, its
WAL, the data folder, the temp folder and the captured logs are searched: nothing."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest

from formrelay.forms import bsn_is_valid

from .canary import found_in, leaks, start_clock, temp_root
from .conftest import canary, post_form
from .keys import TestKey, gpg_decrypt


def random_bsn() -> str:
    rng = random.Random()  # noqa: S311 - test data
    while True:
        n = f"{rng.randrange(10**8, 10**9):09d}"
        if bsn_is_valid(n):
            return n


def test_canary_helper_catches_plain_and_base64() -> None:
    import base64

    secret = canary()
    assert found_in(f"x {secret} y".encode(), secret)
    for pad in range(3):
        assert found_in(base64.encodebytes(b"ab"[:pad] + f"--{secret}--".encode()), secret)
    assert not found_in(b"nothing here", secret)


def test_canary_is_nowhere_on_disk_or_in_logs(make_app: Any, keys: dict[str, TestKey],
                                              logs: pytest.LogCaptureFixture,
                                              tmp_path: Path) -> None:
    since = start_clock()
    app = make_app()
    client = app.test_client()
    c = canary()
    phone = f"06 {random.randrange(10**7, 10**8)}"  # noqa: S311
    bsn = random_bsn()
    answers = {
        "name": f"Naam {c}", "complaint": f"Klacht {c}\nregel twee", "email": f"{c}@example.nl",
        "phone": phone, "visit": "2026-01-02", "age": "42", "insurer": "VGZ",
        "contact": "mail", "symptoms": ["koorts", "overig"], "bsn": bsn, "born": "1970-05-06",
        "consent": "y",
        "attachment": (io.BytesIO(f"plain text file {c}".encode()), f"brief-{c}.txt"),
    }
    r = post_form(client, answers, json_answer=True)
    assert r.status_code == 200, r.get_data(as_text=True)
    ref = r.get_json()["reference"]
    # a rejected post with the same canary must not leave it anywhere either
    bad = post_form(client, {**answers, "age": "999"}, json_answer=True)
    assert bad.status_code == 400

    relay = app.extensions["formrelay"]
    ciphertext = relay.store.ciphertext(ref)
    plain = gpg_decrypt(keys["alice"], ciphertext).decode()
    assert c in plain.replace("=\r\n", "") or c in plain  # the clinician reads it
    data_dir = relay.settings.data_dir
    assert (data_dir / "formrelay.db").exists()
    roots = [data_dir, temp_root()]
    for secret in (c, phone, bsn):
        found = leaks(secret, roots=roots, texts=[logs.text], since=since)
        found = [f for f in found if "/keys" not in f]
        assert found == [], f"{secret} found in {found}"
