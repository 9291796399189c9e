"""The deployment files: gunicorn with deploy/gunicorn.conf.py serves the real app and
logs no secret; the systemd units verify; the Dockerfile lints; Caddyfile and compose
hold what the README promises. (No Docker engine runs here, so the image itself is not
built in the tests: see deploy/README.md.)"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from formrelay.ops.server import gunicorn_options, options_from_env

from .conftest import ENV, canary, make_config_dict, open_store, write_config
from .helpers.servers import DEPLOY, ROOT, _hidden, _http, _wait, caddyfile, gunicorn
from .keys import TestKey
from .smtpd import TlsFiles, free_port

pytestmark = pytest.mark.sqlite_only  # the deployment files, not the store

VENV_BIN = Path(sys.executable).parent
UNITS = ("formrelay.service", "formrelay-worker.service")


def test_gunicorn_conf_serves_a_submission_and_logs_no_secret(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = make_config_dict(tmp_path / "data", keys, server={"base_url": base},
                           patient_copy=True)
    config = write_config(tmp_path / "config.toml", cfg)
    with gunicorn(tmp_path, config, port) as log:
        # a patient fills in the form: show it (for its token), then post it
        status, page, _ = _http(f"{base}/f/intake?embed=1&lang=nl")
        assert status == 200
        hidden = _hidden(page)
        mark = canary()
        body = urllib.parse.urlencode({**hidden, "name": f"Anna {mark}", "complaint": mark,
                                       "email": "anna@example.nl", "consent": "y",
                                       "_copy": "y"}).encode()
        status, answer, _ = _http(f"{base}/f/intake", body, {
            "Accept": "application/json", "Origin": base,
            "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, answer
        receipt = json.loads(answer)
        assert re.fullmatch(r"FR-[2-9A-Z]{4}-[2-9A-Z]{4}", receipt["reference"])
        copy = receipt["public_copy"]
        token_url = copy["download"]["url"]
        # the patient downloads the copy now, then opens the pickup page with a query
        status, pdf, ctype = _http(f"{base}{token_url}?lang=nl", urllib.parse.urlencode(
            {"key": copy["download"]["key"], "grant": copy["download"]["grant"]}).encode(),
            {"Origin": base, "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200 and ctype == "application/pdf" and pdf.startswith(b"%PDF")
        status, _, _ = _http(f"{base}{token_url}?code={copy['code']}&lang=nl")
        assert status in (200, 410)
        status, health, _ = _http(f"{base}/healthz")
        assert status == 200 and json.loads(health)["ok"] is True
    text = log.read_text(encoding="utf-8")
    entries = [json.loads(ln) for ln in text.splitlines() if ln.strip()]  # JSON lines only
    # only formrelay's and gunicorn's own events: a library's chatter can describe content
    # (fontTools lists the glyphs in a patient's PDF)
    assert {e["logger"].split(".")[0] for e in entries} <= {"formrelay", "gunicorn"}
    access = [e for e in entries if e.get("event") == "http"]
    seen = {(e["method"], e["path"], e["status"]) for e in access}
    assert ("POST", "/f/intake", 200) in seen
    assert ("POST", "/copy/[redacted]", 200) in seen
    assert ("GET", "/f/intake", 200) in seen
    assert all("?" not in e["path"] and "?" not in e["msg"] for e in access)
    app_lines = [e["msg"] for e in entries if e["logger"].startswith("formrelay")]
    assert any(receipt["reference"] in msg for msg in app_lines)  # the app logs as JSON too
    token = token_url.rsplit("/", 1)[1]
    for secret in (mark, token, copy["download"]["key"], copy["download"]["grant"],
                   copy["code"], "anna@example.nl", ENV["FORMRELAY_SECRET_KEY"]):
        assert secret not in text, f"{secret!r} is in the log"


def test_serve_and_gunicorn_conf_share_one_set_of_options() -> None:
    assert options_from_env({}) == gunicorn_options()
    opts = options_from_env({"FORMRELAY_BIND": "0.0.0.0:8000", "FORMRELAY_WORKERS": "3"})
    assert opts["bind"] == "0.0.0.0:8000" and opts["workers"] == 3
    assert opts["worker_class"] == "formrelay.ops.gworker.GuardedGeventWorker"
    assert opts["timeout"] >= 60
    assert opts["logger_class"] == "formrelay.logs.GunicornLogger"
    assert "%(q)s" not in opts["access_log_format"] and "%(r)s" not in opts["access_log_format"]
    assert opts["secure_scheme_headers"] == {}  # forwarded headers: ProxyFix only


def _units(tmp_path: Path) -> list[Path]:
    """The units with the install prefix pointed at this virtualenv, since verify checks
    that ExecStart's program exists."""
    out = []
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace("/opt/formrelay/bin/", f"{VENV_BIN}/")
        (tmp_path / name).write_text(text)
        out.append(tmp_path / name)
    return out


def test_systemd_units_verify_and_are_hardened(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not installed (scripts/setup.sh --test installs systemd)")
    units = _units(tmp_path)
    r = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    for unit in units:
        # exposure 0 (locked down) .. 10 (unsafe); the threshold is in tenths
        r = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20", str(unit)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-2000:]
        score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)[1])
        assert score <= 2.0
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                     "ProtectHome=yes", "ReadWritePaths=/var/lib/formrelay",
                     "CapabilityBoundingSet=\n", "User=formrelay", "UMask=0077",
                     "EnvironmentFile=/etc/formrelay/formrelay.env"):
            assert line in text, f"{name}: {line.strip()}"
        assert re.findall(r"^ReadWritePaths=(.*)$", text, re.M) == ["/var/lib/formrelay"]
    web = (DEPLOY / "formrelay.service").read_text()
    assert "gunicorn --config /etc/formrelay/gunicorn.conf.py" in web
    assert "formrelay worker" in (DEPLOY / "formrelay-worker.service").read_text()


def test_systemctl_reload_checks_the_config_before_sighup(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """systemd runs the ExecReload= lines in order and stops at the first that fails: the
    check comes first, so a bad file never reaches gunicorn (which would stop on it)."""
    text = (DEPLOY / "formrelay.service").read_text()
    reload = re.findall(r"^ExecReload=(.*)$", text, re.M)
    assert reload == ["/opt/formrelay/bin/formrelay check --config-only",
                      "/bin/kill -HUP $MAINPID"]
    command = reload[0].replace("/opt/formrelay/bin/", f"{VENV_BIN}/").split()
    config = write_config(tmp_path / "config.toml", make_config_dict(tmp_path / "data", keys))
    env = {**os.environ, **ENV, "FORMRELAY_CONFIG": str(config)}  # as the unit sets it
    good = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    config.write_text(config.read_text() + "\n[forms.intake\n")
    bad = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and f"error {config}" in bad.stdout, bad.stdout + bad.stderr
    assert not (tmp_path / "data").exists()


def test_dockerfile_lints_and_keeps_its_promises() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(VENV_BIN))
    if hadolint:
        r = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and not r.stdout.strip(), r.stdout
    froms = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert froms and re.fullmatch(r"python:3\.\d+-slim-\w+", froms[0])
    assert "apt-get install -y --no-install-recommends gnupg" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert 'VOLUME ["/data"]' in text and "install -d -m 0700 -o formrelay" in text
    # no secrets baked in: no ENV/ARG naming a secret, nothing copied but code and conf
    assert not re.search(r"^(ENV|ARG)\b.*(SECRET|PASSWORD)", text, re.M)
    copies = re.findall(r"^COPY (?:--from=\S+ )?(.+) \S+$", text, re.M)
    assert all(src.split()[0] in ("pyproject.toml", "formrelay", "/opt/formrelay",
                                  "widgets/formrelay.js", "deploy/gunicorn.conf.py")
               for src in copies), copies
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {ln[1:] for ln in ignore if ln.startswith("!")}
    assert "*" in ignore and allowed == {"pyproject.toml", "README.md", "formrelay/",
                                         "widgets/formrelay.js", "deploy/gunicorn.conf.py"}


def test_compose_wires_proxy_service_worker_and_secrets() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"formrelay", "worker", "caddy"}
    web, worker, caddy = services["formrelay"], services["worker"], services["caddy"]
    assert "ports" not in web and "ports" not in worker  # only Caddy faces the internet
    assert "443:443" in caddy["ports"] and "80:80" in caddy["ports"]
    assert web["command"][:3] == ["gunicorn", "--config", "/etc/formrelay/gunicorn.conf.py"]
    assert worker["command"] == ["formrelay", "worker"]
    for svc in (web, worker):
        assert svc["env_file"] == "formrelay.env" and "data:/data" in svc["volumes"]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert not any("SECRET" in k or "PASSWORD" in k for k in svc.get("environment", {}))
    assert caddy["environment"]["FORMRELAY_UPSTREAM"] == "formrelay:8000"
    assert "env_file" not in caddy  # the proxy never sees the secrets
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    for path in ("deploy/formrelay.env", "deploy/.env", "deploy/site/"):
        assert path in ignored
    example = (DEPLOY / "formrelay.env.example").read_text()
    assert re.findall(r"^(FORMRELAY_\w+)=$", example, re.M) == [
        "FORMRELAY_SECRET_KEY", "FORMRELAY_SMTP_PASSWORD", "FORMRELAY_HEALTH_TOKEN",
        "FORMRELAY_REDIS_PASSWORD", "FORMRELAY_DATABASE_URL"]


def test_caddyfile_is_valid_and_proxies_to_formrelay(tmp_path: Path) -> None:
    caddy = shutil.which("caddy")
    if not caddy:
        pytest.skip("caddy not installed (scripts/setup.sh --test installs it)")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    for extra, upstream in (({}, "127.0.0.1:8000"),
                            ({"FORMRELAY_UPSTREAM": "formrelay:8000"}, "formrelay:8000")):
        r = subprocess.run([caddy, "adapt", "--config", str(caddyfile(caddy, tmp_path)),
                            "--adapter", "caddyfile"], capture_output=True, text=True,
                           timeout=60, env={**env, "FORMRELAY_DOMAIN": "forms.praktijk.test",
                                            **extra})
        assert r.returncode == 0, r.stderr
        adapted = r.stdout
        assert '"forms.praktijk.test"' in adapted and f'"dial":"{upstream}"' in adapted
        assert '"Strict-Transport-Security":["max-age=31536000' in adapted
        assert '"logs"' not in adapted  # no access log with query strings or copy links
        # slow clients: whole requests buffered before they reach formrelay, read timeouts
        assert re.search(r'"(buffer_requests":true|request_buffers":3\d{7})', adapted)
        assert '"read_header_timeout":10000000000' in adapted
        assert '"read_timeout":300000000000' in adapted
    r = subprocess.run([caddy, "validate", "--config", str(caddyfile(caddy, tmp_path)), "--adapter",
                        "caddyfile"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr


def test_caddyfile_takes_several_app_instances(tmp_path: Path) -> None:
    """The scaled layout: FORMRELAY_UPSTREAM lists several instances, Caddy spreads the
    requests over all of them."""
    caddy = shutil.which("caddy")
    if not caddy:
        pytest.skip("caddy not installed (scripts/setup.sh --test installs it)")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "FORMRELAY_UPSTREAM": "10.0.0.11:8000 10.0.0.12:8000"}
    r = subprocess.run([caddy, "adapt", "--config", str(caddyfile(caddy, tmp_path)),
                        "--adapter", "caddyfile"], capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert '"upstreams":[{"dial":"10.0.0.11:8000"},{"dial":"10.0.0.12:8000"}]' in r.stdout


def test_deploy_readme_config_is_valid_and_the_guide_is_complete(tmp_path: Path) -> None:
    import tomllib

    from formrelay.config import parse_config

    guide = (DEPLOY / "README.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```toml\n(.*?)```", guide, re.S)
    raw = tomllib.loads(block + '\n[[forms.intake.fields]]\nname = "name"\ntype = "text"\n'
                        'label = "Naam"\n')
    settings = parse_config(raw, tmp_path / "config.toml", ENV)
    assert settings.server.trusted_proxies == 1 and settings.server.data_dir == "/data"
    assert settings.server.base_url.startswith("https://")
    for topic in ("Server and DNS", "Thunderbird", "Kleopatra", "GPG Suite", "Proton",
                  "fingerprint by phone", "Configuration", "Secrets", "Start", "snippet",
                  "test submission", "What the clinician sees", "Key renewal", "Upgrade",
                  "Backup", "Restore", "Without Docker", "formrelay check",
                  "formrelay backup", "data-formrelay="):
        assert topic in guide, topic
    privacy = (DEPLOY / "PRIVACY.md").read_text(encoding="utf-8")
    compliance = ROOT.parent / "shared" / "compliance.md"
    lines = 25
    if compliance.exists():  # the numbered lines of the shared compliance list
        lines = len(re.findall(r"^\d+\. ", compliance.read_text(encoding="utf-8"), re.M))
    for n in range(1, lines + 1):
        assert re.search(rf"^\| {n} \| ", privacy, re.M), f"compliance line {n} not mapped"


def test_behind_caddy_forwarded_headers_come_only_from_the_proxy(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """deploy/Caddyfile in front of deploy/gunicorn.conf.py with trusted_proxies = 1: a
    client's own X-Forwarded-For / -Proto are not believed."""
    caddy = shutil.which("caddy")
    if not caddy:
        pytest.skip("caddy not installed (scripts/setup.sh --test installs it)")
    app_port, proxy_port = free_port(), free_port()
    base = f"http://127.0.0.1:{proxy_port}"
    cfg = make_config_dict(tmp_path / "data", keys,
                           server={"base_url": base, "trusted_proxies": 1})
    config = write_config(tmp_path / "config.toml", cfg)
    # the real Caddyfile, without the admin endpoint
    config_file = caddyfile(caddy, tmp_path, admin=False)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
           "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
           "FORMRELAY_DOMAIN": base, "FORMRELAY_UPSTREAM": f"127.0.0.1:{app_port}"}
    with gunicorn(tmp_path, config, app_port), \
            (tmp_path / "caddy.log").open("wb") as caddy_log:
        proxy = subprocess.Popen([caddy, "run", "--config", str(config_file),
                                  "--adapter", "caddyfile"], env=env, stdout=caddy_log,
                                 stderr=subprocess.STDOUT, cwd=tmp_path)
        conn: http.client.HTTPConnection | None = None
        try:
            _wait(f"{base}/healthz", proxy, tmp_path / "caddy.log")
            # the patient comes from 127.0.0.2, so Caddy (127.0.0.1) and the patient differ
            spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
            conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30,
                                              source_address=("127.0.0.2", 0))
            conn.request("GET", "/f/intake", headers=spoof)
            page = conn.getresponse()
            assert page.status == 200
            body = urllib.parse.urlencode({**_hidden(page.read()), "name": "Test",
                                           "complaint": "test", "consent": "y"})
            conn.request("POST", "/f/intake", body=body, headers={
                **spoof, "Accept": "application/json", "Origin": base,
                "Content-Type": "application/x-www-form-urlencoded"})
            answer = conn.getresponse()
            assert answer.status == 200
            assert answer.getheader("Server") is None  # Caddy drops it
            assert answer.getheader("Strict-Transport-Security", "").startswith("max-age=3153")
            reference = json.loads(answer.read())["reference"]
        finally:
            if conn is not None:
                conn.close()
            proxy.terminate()
            proxy.wait(timeout=30)
    store = open_store(tmp_path / "data" / "formrelay.db")
    [received] = [r for r in store.audit.rows(reference) if r["action"] == "received"]
    store.close()
    # what Caddy saw, not the spoofed header and not Caddy's own address
    assert received["ip"] == "127.0.0.2"


def test_nginx_site_is_valid_and_buffers_requests(tmp_path: Path, tls: TlsFiles) -> None:
    """deploy/nginx.conf, included in a minimal nginx.conf as Debian's includes it, with
    the test certificate instead of Let's Encrypt's: `nginx -t` accepts it."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not nginx:
        pytest.skip("nginx not installed (scripts/setup.sh --test installs it)")
    site = (DEPLOY / "nginx.conf").read_text()
    for line in ("proxy_request_buffering on;", "client_body_timeout", "client_header_timeout",
                 "client_max_body_size 30m;", "limit_conn formrelay_addr",
                 'Strict-Transport-Security "max-age=31536000; includeSubDomains" always',
                 "proxy_set_header X-Forwarded-For $remote_addr;",
                 "proxy_set_header X-Forwarded-Proto $scheme;"):
        assert line in site, line
    assert "$request " not in site and "$request_uri " not in site.split("log_format")[1]
    live = "/etc/letsencrypt/live/forms.example.nl/"
    site = site.replace(f"{live}fullchain.pem", str(tls.cert))
    site = site.replace(f"{live}privkey.pem", str(tls.key))
    site = site.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "formrelay.conf").write_text(site)
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n\tinclude {tmp_path}/formrelay.conf;\n}}\n")
    r = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
