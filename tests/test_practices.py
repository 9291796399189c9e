"""Many practices on one formrelay: each form's pages, mail, PDF, "call the practice"
message and encrypted Practice line name its own practice, never another; clinicians
see only their own practice; config mistakes across practices are refused at start-up."""

from __future__ import annotations

import re
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from formrelay import services
from formrelay.config import ConfigError, parse_config
from formrelay.mail import outbox, reminders

from .area import Browser, Clock, add_user, audit, cheap_hashing, cli_run, totp_at
from .conftest import ENV, make_config_dict, post_form, write_config
from .helpers.copies import pdf_text, pick, thanks
from .helpers.practices import (
    NOORD_FROM,
    NOORD_NAME,
    NOORD_OPERATOR,
    NOORD_PHONE,
    make,
    noord,
    practices_with_clinicians,
    two_practices,
    valid_answers,
)
from .keys import TestKey, gpg_decrypt

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

API = "/clinician/api/submissions"
DEFAULT_NAME, DEFAULT_PHONE = "Praktijk Test", "020 555 0101"


def mails(folder: Path) -> list[EmailMessage]:
    return [message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for p in sorted(folder.glob("*.eml"))]


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


# -- configuration ------------------------------------------------------------------------
def test_single_practice_config_is_the_default_practice(tmp_path: Path,
                                                         keys: dict[str, TestKey]) -> None:
    cfg = make_config_dict(tmp_path / "data", keys)
    s = parse_config(cfg, tmp_path / "config.toml", ENV)
    [p] = s.practices.values()
    assert (p.id, p.name, p.phone, p.sender) == ("default", DEFAULT_NAME, DEFAULT_PHONE,
                                                  "forms@praktijk.test")
    assert s.practice_of("intake") == p and s.forms["intake"].practice == "default"


def test_practices_only_config_needs_no_default_practice(tmp_path: Path,
                                                         keys: dict[str, TestKey]) -> None:
    cfg = make_config_dict(tmp_path / "data", keys)
    del cfg["forms"], cfg["recipients"], cfg["server"]["practice_name"]
    del cfg["server"]["practice_phone"]
    cfg["practices"] = {"noord": noord(keys)}
    s = parse_config(cfg, tmp_path / "config.toml", ENV)
    assert list(s.practices) == ["noord"] and list(s.forms) == ["noord-intake"]
    assert s.default_practice.name == NOORD_NAME


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["practices"]["noord"]["forms"].update(intake=c["forms"]["intake"]),
     "practices.noord.forms.intake: form id 'intake' is used by the default practice and "
     "by practice 'noord'"),
    (lambda c: c["practices"].update(zuid={"name": "Zuid", "phone": "1", "forms": {
        "noord-intake": c["forms"]["intake"]}}),
     "practices.zuid.forms.noord-intake: form id 'noord-intake' is used by practice 'noord' "
     "and by practice 'zuid'"),
    (lambda c: c["practices"]["noord"]["recipients"].update(alice=c["recipients"]["alice"]),
     "recipient id 'alice' is used by the default practice and by practice 'noord'"),
    (lambda c: c["practices"]["noord"]["forms"]["noord-intake"].update(recipients=["alice"]),
     "practices.noord.forms.noord-intake.recipients: unknown recipient 'alice'"),
    (lambda c: c["practices"]["noord"].pop("phone"), "practices.noord.phone: missing"),
    (lambda c: c["practices"]["noord"].update(timezone="Mars/Olympus"),
     "practices.noord.timezone"),
    (lambda c: c["practices"]["noord"].update(colour="red"),
     "practices.noord.colour: unknown setting"),
    (lambda c: c["practices"]["noord"]["theme"].update(accent="#ffff00"),
     "practices.noord.theme.accent"),
    (lambda c: c["practices"].update({"Bad Id": {"name": "x", "phone": "1"}}), "bad id"),
    (lambda c: c["practices"].update(default={"name": "x", "phone": "1"}),
     "'default' is the practice of [server] practice_name"),
])
def test_config_mistakes_across_practices_are_refused(
        tmp_path: Path, keys: dict[str, TestKey], change: Callable[[dict[str, Any]], Any],
        message: str) -> None:
    cfg = two_practices(tmp_path, keys)
    change(cfg)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(cfg, tmp_path / "config.toml", ENV)


def test_practices_dir_holds_one_file_per_practice(tmp_path: Path,
                                                   keys: dict[str, TestKey]) -> None:
    cfg = make_config_dict(tmp_path / "data", keys)
    cfg["server"]["practices_dir"] = "practices"
    (tmp_path / "practices").mkdir()
    write_config(tmp_path / "practices" / "noord.toml", noord(keys))
    s = parse_config(cfg, tmp_path / "config.toml", ENV)
    assert s.practice_of("noord-intake").name == NOORD_NAME
    # a mistake in the file names the file
    bad = noord(keys)
    bad["forms"]["intake"] = bad["forms"]["noord-intake"]
    write_config(tmp_path / "practices" / "noord.toml", bad)
    with pytest.raises(ConfigError, match=r"noord\.toml: forms\.intake: form id 'intake' is "
                                          r"used by the default practice"):
        parse_config(cfg, tmp_path / "config.toml", ENV)
    cfg["server"]["practices_dir"] = "missing"
    with pytest.raises(ConfigError, match="is not a folder"):
        parse_config(cfg, tmp_path / "config.toml", ENV)


# -- what patients and clinicians get ------------------------------------------------------
def test_each_form_names_its_own_practice(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    app = make(tmp_path, two_practices(tmp_path, keys, delivery="email", patient_copy=True))
    client = app.test_client()
    for fid, own, other in (("intake", DEFAULT_NAME, NOORD_NAME),
                            ("noord-intake", NOORD_NAME, DEFAULT_NAME)):
        page = client.get(f"/f/{fid}").get_data(as_text=True)
        assert own in page and other not in page
    # each practice's look
    page = client.get("/f/noord-intake").get_data(as_text=True)
    theme_url = re.search(r'href="(/theme\.css\?[^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert "practice=noord" in theme_url
    assert "#2b6e3f" in client.get(theme_url.replace("&amp;", "&")).get_data(as_text=True)
    default_css = client.get("/theme.css?practice=default").get_data(as_text=True)
    assert "#2b6e3f" not in default_css

    got: dict[str, dict[str, str]] = {}
    for fid in ("intake", "noord-intake"):
        answers = {**valid_answers(fid), "email": "zoe@example.nl", "_copy": "1"}
        got[fid] = thanks(post_form(client, answers, form_id=fid))
    assert NOORD_NAME in got["noord-intake"]["html"]
    assert DEFAULT_NAME not in got["noord-intake"]["html"]
    assert DEFAULT_NAME in got["intake"]["html"] and NOORD_NAME not in got["intake"]["html"]

    built = app.extensions["formrelay"]
    store = built.store
    # the encrypted Practice line, decrypted with each practice's own key
    for fid, key, own, other in (("intake", "alice", DEFAULT_NAME, NOORD_NAME),
                                 ("noord-intake", "bob", NOORD_NAME, DEFAULT_NAME)):
        plain = gpg_decrypt(keys[key], store.submissions.ciphertext(got[fid]["reference"])).decode()
        assert own in plain and other not in plain

    # the patient's PDF
    for fid, own, phone, other in (("intake", DEFAULT_NAME, DEFAULT_PHONE, NOORD_NAME),
                                   ("noord-intake", NOORD_NAME, NOORD_PHONE, DEFAULT_NAME)):
        page = got[fid]
        pdf = pick(client, page["url"], page["key"], grant=page["grant"])
        assert pdf.mimetype == "application/pdf", pdf.get_data(as_text=True)
        text = pdf_text(pdf.data)
        assert own in text and phone in text and other not in text
        # the copy's pickup page too
        shown = client.get(page["url"]).get_data(as_text=True)
        assert own in shown and other not in shown

    # the mail: the submission's From and the link mail's subject and text
    assert outbox.deliver_pending(built.settings, store, kinds=services.mail_kinds()).sent == 4
    sent = mails(tmp_path / "mail")
    by_to = {str(m["To"]): m for m in sent}
    assert str(by_to["bob@noord.test"]["From"]) == NOORD_FROM
    assert str(by_to["alice@praktijk.test"]["From"]) == "forms@praktijk.test"
    links = [m for m in sent if str(m["To"]) == "zoe@example.nl"]
    noord_link = next(m for m in links if NOORD_NAME in str(m["Subject"]))
    default_link = next(m for m in links if DEFAULT_NAME in str(m["Subject"]))
    assert str(noord_link["From"]) == NOORD_FROM
    body = noord_link.get_content()
    assert NOORD_NAME in body and NOORD_PHONE in body and DEFAULT_NAME not in body
    assert DEFAULT_PHONE in default_link.get_content()
    assert NOORD_NAME not in default_link.get_content()


def test_held_notice_and_operator_mail_go_by_practice(tmp_path: Path,
                                                      keys: dict[str, TestKey]) -> None:
    cfg = two_practices(tmp_path, keys)  # hold delivery: a notice to the recipients
    cfg["practices"]["noord"]["recipients"]["soon"] = {
        "email": "soon@noord.test", "key_file": str(keys["soon"].public),
        "fingerprint": keys["soon"].fingerprint}
    app = make(tmp_path, cfg)
    client = app.test_client()
    for fid in ("intake", "noord-intake"):
        assert post_form(client, valid_answers(), form_id=fid).status_code == 200
    built = app.extensions["formrelay"]
    statuses = built.relay.sync_keys()
    assert reminders.check_key_expiry(built.settings, built.store, statuses,
                                   statuses["soon"].expires) == ["soon"]
    outbox.deliver_pending(built.settings, built.store, kinds=services.mail_kinds())
    by_to = {str(m["To"]): m for m in mails(tmp_path / "mail")}
    notice = by_to["bob@noord.test"]
    assert NOORD_NAME in str(notice["Subject"]) and str(notice["From"]) == NOORD_FROM
    assert DEFAULT_NAME not in notice.get_content()
    assert DEFAULT_NAME in str(by_to["alice@praktijk.test"]["Subject"])
    # the expiring key is noord's: its operator is told, not the default practice's
    assert "key of soon" in str(by_to[NOORD_OPERATOR]["Subject"])
    assert "beheer@praktijk.test" not in by_to


def test_unavailable_form_names_its_own_practices_phone(tmp_path: Path,
                                                        keys: dict[str, TestKey]) -> None:
    cfg = two_practices(tmp_path, keys)
    cfg["practices"]["noord"]["recipients"]["bob"].update(
        key_file=str(keys["expired"].public), fingerprint=keys["expired"].fingerprint)
    app = make(tmp_path, cfg)
    client = app.test_client()
    r = client.get("/f/noord-intake")
    html = r.get_data(as_text=True)
    assert r.status_code == 503 and NOORD_PHONE in html and DEFAULT_PHONE not in html
    assert NOORD_NAME in html and DEFAULT_NAME not in html
    r = post_form(client, valid_answers(), form_id="noord-intake", json_answer=True)
    assert r.status_code == 503 and NOORD_PHONE in r.get_json()["error"]
    assert client.get("/f/intake").status_code == 200


# -- clinicians see only their practice ------------------------------------------------------
def test_users_belong_to_one_practice(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    make(tmp_path, two_practices(tmp_path, keys))
    pw = "lange zin als wachtwoord"
    for args, message in (
            (("--practice", "noord", "--recipient", "alice"),
             "recipient 'alice' belongs to practice 'default', not to 'noord'"),
            (("--recipient", "bob"), "recipient 'bob' belongs to practice 'noord', not to "
                                     "'default'"),
            (("--practice", "noord", "--form", "intake"),
             "form 'intake' belongs to practice 'default'"),
            (("--practice", "zuid", "--recipient", "bob"), "unknown practice 'zuid'")):
        r = cli_run(tmp_path, "users", "add", "bram", *args, input=f"{pw}\n{pw}\n")
        assert r.exit_code == 1 and message in r.output, r.output
    assert "bram" not in cli_run(tmp_path, "users", "list").output
    r = add_user(tmp_path, "bram", "--practice", "noord", "--recipient", "bob")
    assert "practice noord" in r.output and "noord-intake" in r.output
    assert "practice noord" in cli_run(tmp_path, "users", "list").output


def test_a_clinician_never_gets_another_practices_submission(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    clock = Clock()
    app, mine, theirs = practices_with_clinicians(tmp_path, keys, clock)
    unknown = "FR-2222-2222"
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    inbox = b.get("/clinician/").get_data(as_text=True)
    assert mine in inbox and theirs not in inbox and NOORD_NAME not in inbox
    assert DEFAULT_NAME in inbox
    # by URL: another practice's reference answers exactly like an unknown one
    for path in ("/clinician/s/REF/asc", "/clinician/s/REF/eml", "/clinician/s/REF/processed"):
        seen = [b.get(path.replace("REF", ref)) for ref in (theirs, unknown)]
        assert [r.status_code for r in seen] == [404, 404], path
        assert seen[0].get_data(as_text=True) == seen[1].get_data(as_text=True)
    for ref in (theirs, unknown):
        assert b.post(f"/clinician/s/{ref}/processed").status_code == 404
    assert app.extensions["formrelay"].store.submissions.get(theirs)["status"] == "held"
    refused = [row for row in audit(app, "downloaded", "refused") + audit(app, "deleted",
                                                                          "refused")
               if row["reference"] == theirs]
    assert refused and all(row["actor"] == "user:anna" for row in refused)
    assert {row["detail"] for row in refused} == {"another practice's submission"}

    # and by API token
    b.get("/clinician/account/")
    page = b.post("/clinician/account/tokens", {"name": "his"}).get_data(as_text=True)
    token = re.search(r'<code id="new-token">(fr_[^<]+)</code>', page).group(1)  # type: ignore[union-attr]
    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    listed = api.get(API, headers=auth, base_url="https://localhost").get_json()
    assert [s["reference"] for s in listed["submissions"]] == [mine]
    seen_api = []
    for ref in (theirs, unknown):
        r = api.get(f"{API}/{ref}", headers=auth, base_url="https://localhost")
        seen_api.append((r.status_code, r.get_json()))
    assert seen_api[0] == seen_api[1] and seen_api[0][0] == 404
    assert len([row for row in audit(app, "downloaded", "refused")
                if row["reference"] == theirs]) == 3  # .asc, .eml and the API

    # bram sees noord's, in noord's name
    clinician = Browser(app, ip="192.0.2.9")
    clinician.enrol("bram", totp_at(clock))
    inbox = clinician.get("/clinician/").get_data(as_text=True)
    assert theirs in inbox and mine not in inbox and NOORD_NAME in inbox
    assert DEFAULT_NAME not in inbox
    assert clinician.get(f"/clinician/submissions/{mine}.asc").status_code == 404


def test_check_lists_the_practices(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    make(tmp_path, two_practices(tmp_path, keys))
    r = cli_run(tmp_path, "check")
    assert "practices: default (intake), noord (noord-intake)" in r.output, r.output
