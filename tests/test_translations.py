"""Every string the UI shows has a Dutch translation (English msgids are the source)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

PACKAGE = Path(__file__).parent.parent / "formrelay"
PO = PACKAGE / "translations" / "nl" / "LC_MESSAGES" / "messages.po"

# _("...") in templates; gettext("...") / fld.gettext("...") / tr.gettext("...") in code.
TEMPLATE_CALL = re.compile(r"""\b_\(\s*(["'])((?:(?!\1).)+)\1\s*[,)]""", re.S)
CODE_CALL = re.compile(r"""gettext\(\s*(?:lang,\s*)?(["'])((?:(?!\1).)+)\1\s*[,)]""", re.S)


def used_msgids() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.html"):
        found |= {m.group(2) for m in TEMPLATE_CALL.finditer(path.read_text(encoding="utf-8"))}
    for path in PACKAGE.rglob("*.py"):
        found |= {m.group(2) for m in CODE_CALL.finditer(path.read_text(encoding="utf-8"))}
    # gettext("en", message) names a language, not a msgid
    return {m for m in found if "{" not in m and m not in ("nl", "en")}


def catalog() -> dict[str, str]:
    with PO.open("rb") as fh:
        cat = read_po(fh, locale="nl")
    return {str(m.id): str(m.string) for m in cat if m.id}


def test_catalog_parses_and_is_not_empty() -> None:
    assert len(catalog()) > 100


@pytest.mark.parametrize("msgid", sorted(used_msgids()))
def test_ui_string_has_dutch_translation(msgid: str) -> None:
    cat = catalog()
    assert cat.get(msgid), f"add a Dutch translation for {msgid!r} to {PO.name}"
