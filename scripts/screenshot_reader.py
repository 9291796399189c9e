"""Take the README's screenshots of the browser reader (docs/reader-sheet.png, a desktop
recovery sheet, and docs/reader-open.png, a submission opened on a 360 px phone).

    .venv/bin/python scripts/screenshot_reader.py

Runs formrelay in-process on a throw-away data folder with the test suite's helpers
(tests/reader.py: invitation, key made in the page) and Debian's Chromium through
Playwright; nothing is downloaded. The recovery key shown is a fresh random one.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import post_form, valid_answers  # noqa: E402
from tests.reader import ARGS, CHROMIUM, accept_invitation, invite, open_in_page, serve  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        folder = Path(tmp)
        for app, base in serve(folder, {}, recipients=()):
            link = invite(folder)
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, "--lang=nl"])
            page = browser.new_page(viewport={"width": 900, "height": 900})
            accept_invitation(page, link)
            page.get_by_label("Leeswachtzin", exact=True).fill("een voorbeeld leeswachtzin")
            page.get_by_label("Leeswachtzin nogmaals").fill("een voorbeeld leeswachtzin")
            page.get_by_role("button", name="Maak mijn sleutel").click()
            page.locator("#sheet").wait_for(state="visible", timeout=60_000)
            page.locator("#sheet").screenshot(path=str(ROOT / "docs" / "reader-sheet.png"))
            page.get_by_label("Ik heb de herstelsleutel geprint").check()
            page.get_by_role("button", name="Activeer mijn sleutel").click()
            page.wait_for_url("**/clinician/")
            ref = post_form(app.test_client(), {
                **valid_answers(), "visit": "2026-11-30", "phone": "06 1234 5678",
                "complaint": "Sinds twee weken pijn in de rechterknie, vooral bij traplopen."},
                json_answer=True, headers={"Origin": base}).get_json()["reference"]
            page.set_viewport_size({"width": 360, "height": 740})
            page.goto(f"{base}/clinician/")
            open_in_page(page, ref, "een voorbeeld leeswachtzin")
            page.locator("#opened").wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(ROOT / "docs" / "reader-open.png"), full_page=True)
            browser.close()
    print("wrote docs/reader-sheet.png and docs/reader-open.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
