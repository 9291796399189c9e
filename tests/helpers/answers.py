"""What the tests of answers to patients share: the clinician who answers with files,
the reply key's private half, and the plaintext as gpg, rnp and Sequoia's sq read it."""

from __future__ import annotations

import io
import subprocess
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from formrelay.replies import secret

from ..area import Browser, Clock, add_user, totp_at


def clinician(app: Any, tmp_path: Path, clock: Clock) -> Browser:
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    return b


def post_answer(b: Browser, reference: str, text: str, files: list[tuple[str, bytes]]) -> Any:
    b.get(f"/clinician/answer/{reference}")
    data: Any = {"answer": text, "files": [(io.BytesIO(d), n) for n, d in files]}
    r = b.post(f"/clinician/answer/{reference}?lang=en", data,
               content_type="multipart/form-data")
    r.get_data()
    r.request.input_stream.close()  # the test client spools a large body to a temp file
    return r


def private_key(app: Any, reference: str, code: str) -> bytes:
    """What only the code and the server's secret together unwrap."""
    s = app.extensions["formrelay"]
    row = s.store.replies.get(reference)
    key = secret.wrap_key(code, row["salt"], s.settings.secret_key, reference)
    return secret.unwrap(key, row["wrapped_key"], reference)


def sq_decrypt(keyfile: Path, data: bytes) -> bytes:
    """Sequoia's sq (Debian's package, installed by scripts/setup.sh) decrypts `data`."""
    return subprocess.run(["sq", "decrypt", "--recipient-key", str(keyfile)], input=data,
                          capture_output=True, check=True, timeout=120).stdout


def decrypt_with_tools(private: bytes, ciphertext: bytes, tmp: Path) -> dict[str, bytes]:
    """The plaintext as gpg, rnp and Sequoia's sq decrypt it with the reply key."""
    import pysequoia

    tmp.mkdir(mode=0o700)
    keyfile = tmp / "reply-key.asc"
    keyfile.write_text(str(pysequoia.Tsk.from_bytes(private)))
    (tmp / "answer.pgp").write_bytes(ciphertext)
    home = tmp / "gnupg"
    home.mkdir(mode=0o700)
    run = {"capture_output": True, "check": True, "timeout": 120}
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import", str(keyfile)], **run)
    out = {"gpg": subprocess.run(["gpg", "--homedir", str(home), "--batch", "--decrypt",
                                  str(tmp / "answer.pgp")], **run).stdout,
           "rnp": subprocess.run(["rnp", "--keyfile", str(keyfile), "--password", "",
                                  "--decrypt", "--output", "-", str(tmp / "answer.pgp")],
                                 **run).stdout}
    out["sq"] = sq_decrypt(keyfile, ciphertext)
    return out


def parts(mime: bytes) -> tuple[str, dict[str, bytes]]:
    msg = message_from_bytes(mime, policy=policy.default)
    text, files = "", {}
    for part in msg.walk():
        if part.get_content_disposition() == "attachment":
            files[part.get_filename()] = part.get_payload(decode=True)
        elif part.get_content_type() == "text/plain":
            text = part.get_content()
    return text, files
