"""Translations for every string formrelay shows (Dutch and English).

Message catalogues are plain gettext `.po` files under `translations/<lang>/`; Babel
compiles them in memory on first use (no binary `.mo` files in the repository), and
WTForms' own catalogue is the fallback for its built-in validator messages. English
msgids are the source language, so `en` needs no catalogue entries.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from wtforms.i18n import get_translations as wtforms_translations

from .settings import LANGUAGES

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
DEFAULT_LANG = "nl"


def pick_language(wanted: str | None, default: str = DEFAULT_LANG) -> str:
    wanted = (wanted or "").strip().lower()[:2]
    return wanted if wanted in LANGUAGES else default


@functools.cache
def translations(lang: str) -> NullTranslations:
    """The catalogue for `lang`, with WTForms' messages as fallback."""
    po = TRANSLATIONS_DIR / lang / "LC_MESSAGES" / "messages.po"
    base: NullTranslations
    if po.is_file():
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=lang)
        buf = io.BytesIO()
        write_mo(buf, catalog)
        buf.seek(0)
        base = Translations(buf)
    else:
        base = NullTranslations()
    fallback = wtforms_translations([lang])
    if fallback is not None:
        base.add_fallback(fallback)
    return base


def gettext(lang: str, message: str, **params: object) -> str:
    text = translations(lang).gettext(message)
    return text % params if params else text
