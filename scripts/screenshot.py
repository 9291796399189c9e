"""Take the README's screenshot (docs/form.png) of the demo form on the example page.

Start `formrelay demo --port 8000` first, then:
    .venv/bin/python scripts/screenshot.py [http://localhost:8001/] [docs/form.png]
Uses Debian's Chromium through Playwright; nothing is downloaded. Chromium runs in Dutch
(LANGUAGE=nl, --lang=nl) so the date field shows "dd-mm-jjjj" as a Dutch patient sees it;
that needs Debian's `chromium-l10n` (without it the placeholder stays "mm/dd/yyyy").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--lang=nl"]


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8001/"
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/form.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=ARGS, env={**os.environ, "LANGUAGE": "nl"})
        page = browser.new_page(viewport={"width": 900, "height": 1400})
        page.goto(url)
        page.wait_for_function("() => (document.querySelector('[data-formrelay] iframe') || "
                               "{style: {}}).style.height.endsWith('px')")
        page.wait_for_timeout(300)  # let the resized frame paint
        # a window as tall as the page: a full_page capture leaves the cross-origin frame
        # partly unpainted below the first screen
        height = page.evaluate("document.documentElement.scrollHeight")
        page.set_viewport_size({"width": 900, "height": height})
        page.wait_for_timeout(300)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()
    print(out)


if __name__ == "__main__":
    main()
