"""`formrelay demo`: everything on one machine with a throw-away clinician key.

It makes a folder with a fresh key pair (the private half stays in the folder's own
GnuPG home, playing the clinician's mail client), a demo config with an intake form,
mail written as .eml files into a folder, and runs the service on 127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .config import SECRET_KEY_ENV, Settings, load_config
from .crypto import CryptoError

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
recipients = ["dr-demo"]
delivery = "email"
allowed_origins = ["http://127.0.0.1:{host_port}", "http://localhost:{host_port}"]
notice = "Bij spoed: bel 112 of de huisartsenpost."
intro = "Vul dit formulier in om u in te schrijven. Uw antwoorden worden versleuteld."
patient_copy = true

[[forms.intake.fields]]
name = "name"
type = "text"
label = "Naam"
required = true
autocomplete = "name"

[[forms.intake.fields]]
name = "birthdate"
type = "birthdate"
label = "Geboortedatum"
required = true
autocomplete = "bday"

[[forms.intake.fields]]
name = "email"
type = "email"
label = "E-mailadres"
required = true
autocomplete = "email"

[[forms.intake.fields]]
name = "phone"
type = "tel"
label = "Telefoonnummer"
autocomplete = "tel"

[[forms.intake.fields]]
name = "complaint"
type = "textarea"
label = "Waarvoor wilt u de huisarts spreken?"
help = "Beschrijf kort uw klachten of vraag."
required = true

[[forms.intake.fields]]
name = "consent"
type = "consent"
label = "Ik geef toestemming om mijn gegevens te gebruiken voor mijn inschrijving."
"""


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
    (folder / "mail").mkdir(exist_ok=True)
    base = settings.server.base_url
    info = DemoInfo(folder, settings, port, home)
    info.lines = [
        "formrelay demo",
        f"  practice page: http://localhost:{port + 1}/ (the form embedded by the widget)",
        f"  form:          {base}/f/intake",
        f"  widget script: {base}/widget.js",
        f"  config:        {cfg}",
        f"  mail folder:   {folder / 'mail'} (the encrypted .eml files)",
        "  read a submission as the clinician would:",
        f"    formrelay --config {cfg} ciphertext FR-XXXX-XXXX | "
        f"gpg --homedir {home} --decrypt",
        f"    gpg --homedir {home} --decrypt {folder / 'mail'}/<file>.eml",
        "  stop with Ctrl+C",
    ]
    return info


def run_demo(info: DemoInfo) -> None:
    from . import create_app, delivery
    from .logs import configure_logging

    configure_logging(info.settings.server.log_level)  # JSON lines, redacted (logs.py)
    app = create_app(info.settings)
    relay = app.extensions["formrelay"]
    # The delivery worker runs beside the web server, so mail lands in the mail folder.
    _, stop = delivery.start_background(info.settings, relay.store,
                                        key_status=relay.key_status)
    # The example practice page on another origin (in the demo form's allowed_origins).
    from .hostpage import example_page, serve_pages

    host = serve_pages(info.port + 1, {"/": example_page(info.settings.server.base_url)})
    try:
        app.run(host="127.0.0.1", port=info.port, threaded=True, use_reloader=False)
    finally:
        stop.set()
        host.shutdown()
