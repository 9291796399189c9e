"""`formrelay demo` and `formrelay check`, run as a user would run them: the demo as a
real process, its printed commands pasted into a shell as they are, and its practice page
driven in Chromium the way a patient would (the copy downloaded inside the widget)."""

from __future__ import annotations

import email
import html
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner
from playwright.sync_api import sync_playwright

from formrelay.cli import cli

from .conftest import ENV, make_config_dict, write_config
from .keys import TestKey

pytestmark = pytest.mark.sqlite_only  # the demo keeps its own SQLite file

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


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


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited: {log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - loopback
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


@dataclass
class Demo:
    base: str
    port: int
    folder: Path
    log: Path
    env: dict[str, str]

    @property
    def out(self) -> str:
        return self.log.read_text()

    def mail(self, pattern: str, seconds: float = 30) -> Path:
        """A mail the demo's worker writes into its mail folder (it sends after the answer);
        `pattern` as in glob (the name ends in the outbox's number)."""
        folder = self.folder / "mail"
        end = time.monotonic() + seconds
        while not (found := sorted(folder.glob(pattern))) and time.monotonic() < end:
            time.sleep(0.2)
        assert found, (pattern, sorted(p.name for p in folder.iterdir()))
        return found[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMRELAY_")}
    log = tmp / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "formrelay", "demo", "--dir",
                                 str(tmp / "demo"), "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield Demo(f"http://127.0.0.1:{port}", port, tmp / "demo", log, env)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _post(base: str, form_id: str, answers: dict[str, str]) -> str:
    """Fill in `form_id` as a browser would (its hidden fields, the minimum fill time) and
    return the reference of the JSON answer."""
    page = urllib.request.urlopen(f"{base}/f/{form_id}").read().decode()  # noqa: S310
    hidden = dict(re.findall(r'name="(_[a-z]+)"[^>]*value="([^"]*)"', page))
    time.sleep(2.1)  # the demo forms ask for a minimum fill time
    body = urllib.parse.urlencode({**hidden, **answers})
    req = urllib.request.Request(f"{base}/f/{form_id}", data=body.encode(),  # noqa: S310
                                 headers={"Accept": "application/json", "Origin": base})
    answer = urllib.request.urlopen(req).read().decode()  # noqa: S310
    ref = re.search(r"FR-\w{4}-\w{4}", answer)
    assert ref, answer
    return ref.group(0)


def _printed_block(out: str, title: str) -> list[str]:
    """The indented command lines the demo printed under `title`."""
    lines = out.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip() == title)
    block = []
    for ln in lines[at + 1:]:
        if not ln.startswith("    "):
            break
        block.append(ln.strip())
    assert block, out
    return block


def test_demo_in_english_asks_every_question_in_english(demo: Demo) -> None:
    config = tomllib.loads((demo.folder / "config.toml").read_text(encoding="utf-8"))
    for form_id, form in config["forms"].items():
        page = urllib.request.urlopen(f"{demo.base}/f/{form_id}?lang=en").read().decode()  # noqa: S310
        text = html.unescape(re.sub(r"\s+", " ", page))
        pairs = [(form[k], form.get(f"{k}_en")) for k in ("title", "notice", "intro") if k in form]
        pairs += [(f[k], f.get(f"{k}_en")) for f in form["fields"] for k in ("label", "help")
                  if k in f]
        pairs += [(c, en) for f in form["fields"] if "choices" in f
                  for c, en in zip(f["choices"], f.get("choices_en") or [None] * 99, strict=False)]
        assert pairs
        for dutch, english in pairs:
            assert english, f"{form_id}: no English text for {dutch!r}"
            assert english in text, f"{form_id}: {english!r} not shown"
            assert dutch not in text, f"{form_id}: Dutch {dutch!r} shown in English"


def test_demo_serves_both_forms_and_its_printed_commands_work(demo: Demo) -> None:
    base, env = demo.base, demo.env
    page = urllib.request.urlopen(f"{base}/f/intake").read().decode()  # noqa: S310
    assert "Aanmelden als nieuwe patiënt" in page
    patient = {"name": "Anna de Vries", "birthdate": "1980-02-03", "email": "anna@example.nl"}
    mailed = _post(base, "intake", {**patient, "complaint": "Rugpijn sinds één week",
                                    "consent": "y"})
    held = _post(base, "vraag", {**patient, "name": "Kees Bakker",
                                 "question": "Een rode plek op mijn arm"})
    assert urllib.request.urlopen(f"{base}/clinician/").status == 200  # noqa: S310
    eml = demo.mail(f"{mailed}.eml")
    assert b"Anna de Vries" not in eml.read_bytes()  # only ciphertext in the mail folder
    assert demo.mail(f"{held}-held-notice-*.eml").read_bytes().count(held.encode())
    out = demo.out
    for url in (f"http://localhost:{demo.port + 1}/", f"{base}/f/intake", f"{base}/f/vraag",
                f"{base}/clinician/"):
        assert url in out, out
    password = re.search(r"user dokter, password (\S+) ", out)
    assert password, out
    assert "development server" not in out  # Werkzeug's banner reads like an error

    # the clinician reads the mail exactly as printed
    [read_mail] = _printed_block(out, "read a mail as the clinician's mail program would:")
    plain = subprocess.run(["bash", "-c", read_mail.replace("FR-XXXX-XXXX", mailed)],
                           capture_output=True, env=env, timeout=60)
    assert plain.returncode == 0, plain.stderr
    text = plain.stdout.decode()
    # the readable text part, not quoted-printable MIME (Rugpijn sinds =C3=A9=C3=A9n week)
    assert "Anna de Vries" in text and "Rugpijn sinds één week" in text, text
    assert "=C3" not in text and "Content-Transfer-Encoding" not in text, text
    assert "Attachments: answers.json" in text, text
    # rnp (Thunderbird's engine) with the exported secret key, on the encrypted part
    lines = [*_printed_block(out, "or with rnp (Thunderbird's engine) or sq (Sequoia): "
                                  "export the demo's secret key once,"),
             *_printed_block(out, "then give them the encrypted part only (not the whole "
                                  ".eml):")]
    assert "--export-secret-keys" in lines[0]
    rnp = "\n".join(["set -euo pipefail", lines[0],
                      *(ln for ln in lines[1:] if "| rnp " in ln)])
    ran = subprocess.run(["bash", "-c", rnp.replace("FR-XXXX-XXXX", mailed)],
                         capture_output=True, env=env, timeout=60)
    assert ran.returncode == 0 and b"Rugpijn sinds" in ran.stdout, ran.stderr
    assert b"extra data" not in ran.stderr, ran.stderr
    # the operator's commands, pasted into a shell as they are
    script = "\n".join(["set -euo pipefail",
                         *_printed_block(out, "the command line, in another terminal:")])
    ran = subprocess.run(["bash", "-c", script.replace("FR-XXXX-XXXX", held)],
                         capture_output=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stdout.decode() + ran.stderr.decode()
    assert b"created anna" in ran.stdout and b"Kees Bakker" in ran.stdout
    assert b"form vraag (hold)" in ran.stdout

    # the printed password opens the demo account (its authenticator app is set up in
    # the browser at the first login)
    from formrelay import services
    from formrelay.config import load_config

    settings = load_config(demo.folder / "config.toml",
                           {"FORMRELAY_SECRET_KEY": (demo.folder / ".secret_key").read_text()})
    built = services.build(settings)
    try:
        user = built.accounts.check_password("dokter", password.group(1), "127.0.0.1")
        assert not user.enrolled
    finally:
        built.close()

    # run again on another port: the config (base_url, allowed_origins) is for this one
    again = subprocess.run([sys.executable, "-m", "formrelay", "demo", "--dir",
                            str(demo.folder), "--port", str(demo.port + 2), "--no-serve"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode != 0
    assert f"--port {demo.port}" in again.stderr, again.stderr


def test_patient_downloads_the_copy_inside_the_widget_and_again_by_link(
        demo: Demo, tmp_path: Path) -> None:
    """The thank-you page's "download now" inside the practice page's frame (the sandbox
    must allow downloads), then the mailed link with a wrong and a right pickup code; the
    buttons work again after each download and no stale error stays on the page."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.set_default_timeout(15_000)
            page.goto(f"http://localhost:{demo.port + 1}/")
            form = page.frame_locator("[data-formrelay=intake] iframe")
            form.get_by_label("Naam").fill("Zoë Jansen")
            form.get_by_label("Geboortedatum").fill("1990-07-07")
            form.get_by_label("E-mailadres").fill("zoe@example.nl")
            form.get_by_label("Waarvoor wilt u de huisarts spreken?").fill("Hoofdpijn")
            form.get_by_label("Ik geef toestemming", exact=False).check()
            form.get_by_label("Stuur mij een kopie van mijn antwoorden").check()
            time.sleep(2.1)  # the demo form's minimum fill time
            form.get_by_role("button", name="Veilig versturen").click()
            code = form.locator("#pickup-code").inner_text().strip()
            reference = form.locator("#reference").inner_text().strip()
            now = form.locator(".copy-now button")
            with page.expect_download() as first:
                now.click()
            assert first.value.suggested_filename == f"{reference.lower()}.pdf"
            form.locator(".copy-now button:not([disabled])").wait_for()  # usable again

            mail = email.message_from_bytes(
                demo.mail(f"{reference}-patient_copy-*.eml").read_bytes(),
                policy=policy.default)
            body = mail.get_body(("plain",))
            assert body is not None
            link = re.search(r"http://\S+/copy/\S+#\S+", body.get_content())
            assert link, body.get_content()
            page.goto(link.group(0))
            page.fill("#f-code", "AAAAAA" if code != "AAAAAA" else "BBBBBB")
            page.click("button[type=submit]")
            assert "U kunt het nog 4 keer proberen" in page.inner_text("#e-code")
            page.fill("#f-code", code.lower())
            with page.expect_download() as second:
                page.click("button[type=submit]")
            saved = tmp_path / "copy.pdf"
            second.value.save_as(saved)
            assert saved.read_bytes().startswith(b"%PDF")
            assert page.is_hidden("#error-summary") and page.is_hidden("#e-code")
            page.locator("button[type=submit]:not([disabled])").wait_for()
        finally:
            browser.close()


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


def test_decrypt_demo_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "clinician-gnupg").mkdir(mode=0o700)
    plain = tmp_path / "note.eml"
    plain.write_text("Subject: hallo\n\nGewone tekst\n")
    r = CliRunner().invoke(cli, ["decrypt-demo", "--dir", str(tmp_path), str(plain)])
    assert r.exit_code != 0 and "not an encrypted message" in r.output, r.output
    armored = tmp_path / "x.asc"
    armored.write_text("-----BEGIN PGP MESSAGE-----\n\nbm9wZQ==\n-----END PGP MESSAGE-----\n")
    r = CliRunner().invoke(cli, ["decrypt-demo", "--dir", str(tmp_path), str(armored)])
    assert r.exit_code != 0 and "gpg could not decrypt it with the demo's key" in r.output
    r = CliRunner().invoke(cli, ["decrypt-demo", "--dir", str(tmp_path / "nope"), str(plain)])
    assert r.exit_code != 0 and "is not a demo folder" in r.output
    assert "Traceback" not in r.output
