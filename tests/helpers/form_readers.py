"""A practice whose form goes to browser recipients chosen by the practice owner: the
owner and members with keys made by the vendored OpenPGP.js, the members page's change,
a submission, and whether a member's locked key opens it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from flask import Flask

from ..area import Browser, Clock, add_user, answers, totp_at
from ..conftest import post_form, valid_answers
from ..keys import TestKey
from ..reader import gpg_with_locked_key, reader_config

BASE = "https://localhost"
OTHER = "een andere leeswachtzin"  # noqa: S105 - a test value


def practice(tmp_path: Path, keys: dict[str, TestKey], **form: Any) -> Path:
    """The form goes to anna's browser recipient `reader`; bram's, `second`, reads no
    form yet; alice reads with a key file, on no form. `form`: more of the form's
    settings (replies, upload_link)."""
    path = reader_config(tmp_path, keys, BASE,
                         server={"base_url": BASE, "operator_email": "beheer@praktijk.test"},
                         smtp={"from_address": "forms@praktijk.test",
                               "sink_dir": str(tmp_path / "mail")}, **form)
    cfg = tomllib.loads(path.read_text())
    cfg["recipients"]["second"] = {"email": "second@praktijk.test", "key_source": "browser"}
    cfg["recipients"]["alice"] = {"email": "alice@praktijk.test", "fingerprint":
                                  keys["alice"].fingerprint,
                                  "key_file": str(keys["alice"].public)}
    path.write_text(tomli_w.dumps(cfg))
    return path


def member(app: Flask, tmp_path: Path, clock: Clock, name: str, rid: str, ip: str) -> Browser:
    add_user(tmp_path, name, "--recipient", rid)
    b = Browser(app, ip=ip)
    b.enrol(name, totp_at(clock))
    return b


def with_key(b: Browser, key: dict[str, str]) -> None:
    b.get("/clinician/key/")
    made = b.post("/clinician/key/", {k: key[k] for k in ("fingerprint", "public_key",
                                                          "locked_key", "recovery_locked_key")})
    assert b.post(made.get_json()["activate"]).status_code == 302


def submit(app: Flask) -> str:
    r = post_form(app.test_client(), valid_answers("lezers"), json_answer=True,
                  headers={"Origin": BASE})
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["reference"])


def opens(app: Flask, ref: str, key: dict[str, str], passphrase: str) -> bool:
    ciphertext = b"".join(app.extensions["formrelay"].store.submissions.stream(ref))
    done = gpg_with_locked_key(key["locked_key"], passphrase, ciphertext)
    if done.returncode != 0:
        return False
    return answers(done.stdout)["answers"]["name"] == "Jeroen Brünhilde lezers"


def change(owner: Browser, how: str, rid: str, form: str = "intake") -> tuple[int, str]:
    owner.get("/clinician/members/")
    r = owner.post(f"/clinician/members/readers/{how}", {"form": form, "recipient": rid})
    return r.status_code, r.get_data(as_text=True)
