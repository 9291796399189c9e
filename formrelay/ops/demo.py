"""`formrelay demo`: everything on one machine with a throw-away clinician key.

It makes a folder with a fresh key pair (the private half stays in the folder's own
GnuPG home, playing the clinician's mail client), a demo config with an intake form
(delivered by mail) and a question form (held for download in the clinician area), a
clinician account with a throw-away password, mail written as .eml files into a folder,
and runs the service on 127.0.0.1. The commands it prints are meant to be pasted as they
are (tests/test_demo.py runs them).
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, load_config
from ..crypto.keyring import CryptoError
from ..settings import SECRET_KEY_ENV, Settings

DEMO_CONFIG = """\
# Demo configuration written by `formrelay demo`. Not for production.
[server]
base_url = "http://127.0.0.1:{port}"
data_dir = "data"
practice_name = "Huisartsenpraktijk De Linde (demo)"
practice_phone = "020 123 4567"
practice_email = "assistente@praktijk.example"
min_fill_seconds = 2

[smtp]
from_address = "formulieren@praktijk.example"
sink_dir = "mail"

[recipients.dr-demo]
email = "dokter@praktijk.example"
key_file = "clinician.asc"
fingerprint = "{fingerprint}"

[forms.intake]
title = "Aanmelden als nieuwe patiënt"
title_en = "Register as a new patient"
recipients = ["dr-demo"]
delivery = "email"
allowed_origins = ["http://127.0.0.1:{host_port}", "http://localhost:{host_port}"]
notice = "Bij spoed: bel 112 of de huisartsenpost."
notice_en = "In an emergency: call 112 or the out-of-hours GP service (huisartsenpost)."
intro = "Vul dit formulier in om u in te schrijven. Uw antwoorden worden versleuteld."
intro_en = "Fill in this form to register with the practice. Your answers are encrypted."
patient_copy = true

[[forms.intake.fields]]
name = "name"
type = "text"
label = "Naam"
label_en = "Name"
required = true
autocomplete = "name"

[[forms.intake.fields]]
name = "birthdate"
type = "birthdate"
label = "Geboortedatum"
label_en = "Date of birth"
required = true
autocomplete = "bday"

[[forms.intake.fields]]
name = "email"
type = "email"
label = "E-mailadres"
label_en = "Email address"
required = true
autocomplete = "email"

[[forms.intake.fields]]
name = "phone"
type = "tel"
label = "Telefoonnummer"
label_en = "Phone number"
autocomplete = "tel"

[[forms.intake.fields]]
name = "complaint"
type = "textarea"
label = "Waarvoor wilt u de huisarts spreken?"
label_en = "Why would you like to see the GP?"
help = "Beschrijf kort uw klachten of vraag."
help_en = "Briefly describe your symptoms or question."
required = true

[[forms.intake.fields]]
name = "consent"
type = "consent"
label = "Ik geef toestemming om mijn gegevens te gebruiken voor mijn inschrijving."
label_en = "I agree that my details are used for my registration."

[forms.vraag]
title = "Vraag aan de huisarts"
title_en = "Question for the GP"
recipients = ["dr-demo"]
delivery = "hold"
allowed_origins = ["http://127.0.0.1:{host_port}", "http://localhost:{host_port}"]
retention_days = 14
notice = "Bij spoed: bel 112 of de huisartsenpost."
notice_en = "In an emergency: call 112 or the out-of-hours GP service (huisartsenpost)."
intro = "Stel uw vraag aan de huisarts. U krijgt binnen drie werkdagen antwoord."
intro_en = "Ask the GP your question. You will get an answer within three working days."

[[forms.vraag.fields]]
name = "name"
type = "text"
label = "Naam"
label_en = "Name"
required = true
autocomplete = "name"

[[forms.vraag.fields]]
name = "birthdate"
type = "birthdate"
label = "Geboortedatum"
label_en = "Date of birth"
required = true
autocomplete = "bday"

[[forms.vraag.fields]]
name = "email"
type = "email"
label = "E-mailadres"
label_en = "Email address"
required = true
autocomplete = "email"

[[forms.vraag.fields]]
name = "question"
type = "textarea"
label = "Uw vraag"
label_en = "Your question"
required = true

[[forms.vraag.fields]]
name = "photo"
type = "file"
label = "Foto of document (niet verplicht)"
label_en = "Photo or document (optional)"
help = "Bijvoorbeeld een foto van een huidplek of een uitslag: pdf, jpg of png, tot 10 MB."
help_en = "For example a photo of a skin spot or a test result: pdf, jpg or png, up to 10 MB."
accept = ["pdf", "jpg", "jpeg", "png"]
"""

DEMO_USER = "dokter"


@dataclass
class DemoInfo:
    folder: Path
    settings: Settings
    port: int
    clinician_home: Path
    lines: list[str] = field(default_factory=list)


def _make_key(home: Path) -> str:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = ["gpg", "--homedir", str(home), "--batch", "--no-random-seed-file"]
    uid = "Demo Clinician <dokter@praktijk.example>"
    try:
        subprocess.run([*base, "--passphrase", "", "--quick-gen-key", uid, "future-default",
                        "default", "1y"], check=True, capture_output=True, timeout=120)
        out = subprocess.run([*base, "--with-colons", "--list-keys"], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise CryptoError(f"could not create the demo key with gpg ({exc}); is gnupg "
                          "installed?") from None
    return next(ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:"))


def _program() -> str:
    """How to call this very formrelay again from a shell: `formrelay` when that is the
    one on PATH, else its full path (scripts/demo.sh runs .venv/bin/formrelay, which is
    not on PATH), or `python -m formrelay`."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "formrelay":
        found = shutil.which("formrelay")
        if found and Path(found).resolve() == argv0.resolve():
            return "formrelay"
        return shlex.quote(str(argv0.absolute()))
    return f"{shlex.quote(sys.executable)} -m formrelay"


def _password() -> str:
    return "-".join(secrets.token_urlsafe(6) for _ in range(3))


def _demo_account(settings: Settings, folder: Path) -> str | None:
    """The clinician account of the demo, made once with a throw-away password that is
    kept in the folder (so every run can print it). None if the account exists but its
    password is unknown (made by hand, or reset)."""
    from ..clinician.accounts import AccountError
    from ..services import build

    pw_file = folder / ".clinician_password"
    services = build(settings)
    try:
        accounts = services.accounts
        if accounts.get(DEMO_USER):
            return pw_file.read_text().strip() if pw_file.exists() else None
        password = _password()
        while DEMO_USER in password.lower():
            password = _password()
        try:
            accounts.add(DEMO_USER, password, email="dokter@praktijk.example",
                         recipients=["dr-demo"])
        except AccountError:  # a config edited by hand: no dr-demo any more
            return None
        pw_file.write_text(password)
        pw_file.chmod(0o600)
        return password
    finally:
        services.close()


def prepare_demo(folder: Path, port: int) -> DemoInfo:
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    home = folder / "clinician-gnupg"
    cfg = folder / "config.toml"
    if not cfg.exists():
        fpr = _make_key(home)
        pub = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--armor", "--export",
                              fpr], check=True, capture_output=True, timeout=60).stdout
        (folder / "clinician.asc").write_bytes(pub)
        cfg.write_text(DEMO_CONFIG.format(port=port, host_port=port + 1, fingerprint=fpr),
                       encoding="utf-8")
    secret_file = folder / ".secret_key"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48))
        secret_file.chmod(0o600)
    os.environ[SECRET_KEY_ENV] = secret_file.read_text().strip()
    settings = load_config(cfg, os.environ)
    base = settings.server.base_url.rstrip("/")
    if base != f"http://127.0.0.1:{port}":
        # the config (and its allowed_origins) was written for the port of the first run
        raise ConfigError(f"{cfg}: this demo folder was made for {base}; run "
                          f"`formrelay demo --dir {shlex.quote(str(folder))} --port "
                          f"{base.rsplit(':', 1)[-1]}`, or use a new folder with --dir")
    (folder / "mail").mkdir(exist_ok=True)
    info = DemoInfo(folder, settings, port, home)
    info.lines = _lines(info, secret_file)
    return info


def _lines(info: DemoInfo, secret_file: Path) -> list[str]:
    """What the demo prints: the addresses to open, the mail folder's files, the demo
    account and the commands to paste."""
    settings, folder, port, home = info.settings, info.folder, info.port, info.clinician_home
    base = settings.server.base_url.rstrip("/")
    q = shlex.quote
    fr = f"{_program()} --config {q(str(settings.path))}"
    mail = folder / "mail"
    held = [fid for fid, spec in settings.forms.items() if spec.delivery == "hold"]
    lines = [
        "formrelay demo",
        f"  practice page:  http://localhost:{port + 1}/ (a practice website with the intake "
        "form, embedded by the widget)",
        f"  intake form:    {base}/f/intake (delivered to the clinician by encrypted mail)",
    ]
    lines += [f"  {fid + ' form:':<15} {base}/f/{fid} (held for download in the clinician "
              "area)" for fid in held]
    lines += [
        f"  widget script:  {base}/widget.js",
        f"  config:         {settings.path}",
        f"  mail folder:    {mail} (one .eml file per mail):",
        "    FR-….eml                 the clinician's encrypted mail (intake form)",
        "    FR-…-patient_copy-….eml  the patient's link to their copy: open it in a mail "
        "program",
        "                             (the raw file splits the long link at a '=' line end)",
    ]
    if held:
        lines.append("    FR-…-held-notice-….eml   the clinician's notice of a held submission "
                     "(no answers)")
        password = _demo_account(settings, folder)
        lines.append(f"  clinician area: {base}/clinician/")
        if password:
            lines.append(f"                  user {DEMO_USER}, password {password} (throw-away; "
                         "the first login sets up an authenticator app)")
        else:
            lines.append(f"                  user {DEMO_USER}; a new password (after the export "
                         f"line below): {fr} users reset {DEMO_USER} --generate-password")
    key = folder / "clinician-secret.asc"
    lines += [
        "  read a mail as the clinician's mail program would:",
        f"    {_program()} decrypt-demo --dir {q(str(folder))} {q(str(mail))}/FR-XXXX-XXXX.eml",
        "  or with rnp (Thunderbird's engine) or sq (Sequoia): export the demo's secret key "
        "once,",
        f"    gpg --homedir {q(str(home))} --batch --armor --export-secret-keys > {q(str(key))}",
        "  then give them the encrypted part only (not the whole .eml):",
        f"    sed -n '/^-----BEGIN PGP MESSAGE/,/^-----END PGP MESSAGE/p' "
        f"{q(str(mail))}/FR-XXXX-XXXX.eml | rnp --keyfile {q(str(key))} --decrypt",
        f"    sed -n '/^-----BEGIN PGP MESSAGE/,/^-----END PGP MESSAGE/p' "
        f"{q(str(mail))}/FR-XXXX-XXXX.eml | sq decrypt --recipient-key {q(str(key))}"
        "  # Debian 12's sq 0.27; sq 0.40 and later: --recipient-file",
        "  the command line, in another terminal:",
        f"    export {SECRET_KEY_ENV}=\"$(cat {q(str(secret_file))})\"",
        f"    {fr} check --offline",
    ]
    if held:
        lines += [
            f"    {fr} users add anna --recipient dr-demo --generate-password",
            f"    {fr} ciphertext FR-XXXX-XXXX | {_program()} decrypt-demo --dir "
            f"{q(str(folder))} -  # a held one",
        ]
    lines.append("  stop with Ctrl+C")
    return lines


def readable_mail(folder: Path, data: bytes) -> str:
    """What a mail program shows of a demo message: decrypted with the demo's clinician
    key, its protected subject, its text part decoded (not the quoted-printable MIME gpg
    prints) and the names of its attachments. `data`: a mail from the mail folder (.eml,
    PGP/MIME) or the ciphertext itself (`formrelay ciphertext`)."""
    from email import message_from_bytes, policy

    home = folder.resolve() / "clinician-gnupg"
    if not home.is_dir():
        raise CryptoError(f"{folder} is not a demo folder (no clinician-gnupg in it): name "
                          "it with --dir, as for `formrelay demo`")
    ciphertext = data
    if b"-----BEGIN PGP MESSAGE-----" not in data[:100]:
        outer = message_from_bytes(data, policy=policy.default)
        parts = [p for p in outer.walk() if p.get_content_type() == "application/octet-stream"]
        if not outer.get_content_type() == "multipart/encrypted" or not parts:
            raise CryptoError("not an encrypted message: a mail from the demo's mail folder "
                              "(FR-….eml) or the output of `formrelay ciphertext`")
        payload = parts[0].get_payload(decode=True)
        ciphertext = payload if isinstance(payload, bytes) else b""
    try:
        done = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--quiet",
                               "--no-random-seed-file", "--decrypt"], input=ciphertext,
                              capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CryptoError(f"could not run gpg ({exc}); is gnupg installed?") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no reason"]
        raise CryptoError(f"gpg could not decrypt it with the demo's key: {why[-1]}")
    inner = message_from_bytes(done.stdout, policy=policy.default)
    lines = [f"Subject: {inner['Subject']}"] if inner["Subject"] else []
    files = []
    for part in inner.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if name:
            files.append(f"{name} ({len(part.get_payload(decode=True) or b'')} bytes)")
        elif part.get_content_type() == "text/plain":
            lines += ["", str(part.get_content()).rstrip()]
    if files:
        lines += ["", "Attachments: " + ", ".join(files)]
    return "\n".join(lines).strip() + "\n"


class _NoBanner(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return "development server" not in text and "CTRL+C" not in text


def run_demo(info: DemoInfo) -> None:
    from .. import create_app
    from ..logs import configure_logging
    from . import worker

    configure_logging(info.settings.server.log_level)  # JSON lines, redacted (logs.py)
    # Werkzeug's red "development server" banner reads like an error in the JSON log; the
    # demo is meant to run on it (`formrelay serve` is the production server).
    logging.getLogger("werkzeug").addFilter(_NoBanner())
    app = create_app(info.settings)
    services = app.extensions["formrelay"]
    # The delivery worker runs beside the web server, so mail lands in the mail folder.
    _, stop = worker.start_background(info.settings, services.store,
                                      kinds=services.kinds, purgers=services.purgers,
                                      key_status=services.relay.key_status)
    # The example practice page on another origin (in the demo form's allowed_origins).
    from .hostpage import example_page, serve_pages

    host = serve_pages(info.port + 1, {"/": example_page(info.settings.server.base_url)})
    try:
        # never the debugger, whatever FLASK_DEBUG or a .env file says (ASVS 16.2.5)
        app.run(host="127.0.0.1", port=info.port, threaded=True, use_reloader=False,
                debug=False, load_dotenv=False)
    finally:
        stop.set()
        host.shutdown()
