"""The patient's copy as a PDF, made in memory with fpdf2 (no Flask, nothing on disk).

`copy_pdf()` lays out the practice's name and contact line, the form title, the time it
was received, the reference and every question with its answer (uploads listed by file
name), and returns the PDF bytes. Text is set in DejaVu Sans (Debian's
fonts-dejavu-core), which covers Latin, Greek, Cyrillic and many symbols; Symbola
(fonts-symbola), if installed, is the fallback for emoji. Long answers wrap, also
inside words that are longer than a line. The bytes are encrypted by the caller
(copies.py) before anything is stored.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import OperatorError
from ..i18n import translations
from ..intake.submission import Submission
from ..localtime import DEFAULT_TZ, answer_date, shown

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),
             Path("/usr/local/share/fonts/truetype/dejavu"),
             Path("/usr/share/fonts/dejavu"))
FALLBACK_FONTS = (Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf"),
                  Path("/usr/share/fonts/truetype/ancient-scripts/Symbola.ttf"))
# Patients read times in the practice's zone (server.timezone); this is its default.
LOCAL_TZ = DEFAULT_TZ


class PdfError(OperatorError):
    """The copy cannot be made (e.g. the font is missing); safe to log."""


class _NoGlyphNames(logging.Filter):
    """fpdf2 logs the characters a font lacks; those characters are the patient's
    answers, so the record is dropped (a missing glyph is not worth a log line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "missing the following glyphs" not in str(record.msg)


logging.getLogger("fpdf.output").addFilter(_NoGlyphNames())
logging.getLogger("fpdf").setLevel(logging.ERROR)  # fpdf2's notes are about its input


@dataclass(frozen=True)
class Practice:
    name: str
    phone: str
    email: str = ""

    def contact_line(self, phone_label: str) -> str:
        parts = [self.name, f"{phone_label} {self.phone}"]
        if self.email:
            parts.append(self.email)
        return " · ".join(parts)


@functools.cache
def font_files() -> tuple[Path, Path, Path | None]:
    """(regular, bold, emoji fallback or None); PdfError names the package to install."""
    for folder in FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            emoji = next((p for p in FALLBACK_FONTS if p.is_file()), None)
            return regular, bold, emoji
    raise PdfError("the DejaVu Sans font is missing: install it with "
                   "`apt-get install fonts-dejavu-core` (scripts/setup.sh does)")


def local_time(dt: datetime, tz: str = LOCAL_TZ, lang: str = "nl") -> str:
    """A time the patient reads, in the practice's zone, labelled; the date as every
    date in `lang` (localtime.py)."""
    return shown(dt, tz, lang)


def wrap_lines(text: str, width: float, measure: Callable[[str], float]) -> list[str]:
    """Greedy word wrap to `width` (words longer than a line are cut). fpdf2's own
    multi_cell re-measures the whole paragraph for every character, which takes
    seconds for a 5000-character answer; this measures each word once."""
    space = measure(" ")
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line, used = "", 0.0
        for word in paragraph.split(" "):
            w = measure(word)
            pieces = [(word, w)] if w <= width else _cut(word, width, measure)
            for piece, pw in pieces:
                if line and used + space + pw > width:
                    lines.append(line)
                    line, used = "", 0.0
                if line:
                    line, used = f"{line} {piece}", used + space + pw
                else:
                    line, used = piece, pw
        lines.append(line)
    return lines


def _cut(word: str, width: float, measure: Callable[[str], float]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    piece, used = "", 0.0
    for ch in word:
        cw = measure(ch)
        if piece and used + cw > width:
            out.append((piece, used))
            piece, used = "", 0.0
        piece, used = piece + ch, used + cw
    out.append((piece, used))
    return out


def _fpdf_class() -> type:
    from fpdf import FPDF

    class CopyPdf(FPDF):
        contact = ""

        def footer(self) -> None:
            self.set_y(-14)
            self.set_font("dejavu", "", 8)
            self.set_text_color(90, 90, 90)
            self.cell(0, 5, f"{self.contact}  ·  {self.page_no()}/{{nb}}", align="C")

    return CopyPdf


@functools.cache
def _covered(path: Path) -> frozenset[int]:
    """The characters a font has glyphs for."""
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True) as font:
        return frozenset(font.getBestCmap())


def copy_pdf(sub: Submission, practice: Practice, *, expires: datetime | None = None,
             tz: str = LOCAL_TZ, reply_code: str = "") -> bytes:
    """The patient's copy of `sub` as PDF bytes, in the submission's language; with
    `reply_code`, the code that opens the practice's answer, beside the reference."""
    from fpdf.enums import XPos, YPos

    # Fonts are loaded per document: fpdf2 subsets the loaded font in place when it
    # writes the file, so a font object cannot be shared between documents.
    regular, bold, emoji = font_files()
    pdf = _fpdf_class()(format="A4")
    pdf.add_font("dejavu", "", str(regular))
    pdf.add_font("dejavu", "B", str(bold))
    text = "".join(a.display() for a in sub.answers) + sub.form_title + practice.name
    if emoji is not None and any(ord(ch) not in _covered(regular) for ch in set(text)):
        pdf.add_font("symbola", "", str(emoji))  # 3 MB: only when DejaVu lacks a glyph
        pdf.set_fallback_fonts(["symbola"], exact_match=False)
    tr = translations(sub.lang)
    _ = tr.gettext
    pdf.contact = contact = practice.contact_line(_("Phone"))
    pdf.set_title(_("Copy of your answers"))
    pdf.set_author(practice.name)
    pdf.set_lang(sub.lang)
    pdf.set_creation_date(sub.received_at)
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.alias_nb_pages()
    pdf.add_page()
    width = pdf.epw

    def para(text: str, size: float = 10.5, style: str = "", gap: float = 1.5,
             color: tuple[int, int, int] = (20, 20, 20)) -> None:
        pdf.set_font("dejavu", style, size)
        pdf.set_text_color(*color)
        for line in wrap_lines(text, width - 0.5, pdf.get_string_width):
            pdf.cell(width, size * 0.5, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(gap)

    para(practice.name, 15, "B", 0.5)
    para(contact, 9.5, gap=5, color=(70, 70, 70))
    para(sub.form_title, 13.5, "B", 1)
    para(_("Copy of your answers"), 11, gap=3, color=(70, 70, 70))
    facts: Sequence[tuple[str, str]] = [
        (_("Reference"), sub.reference),
        (_("Received"), local_time(sub.received_at, tz, sub.lang)),
    ]
    if reply_code:
        facts = [*facts, (_("Reply code"), reply_code)]
    if expires is not None:
        facts = [*facts, (_("Link valid until"), local_time(expires, tz, sub.lang))]
    for label, value in facts:
        para(f"{label}: {value}", 10, gap=0.5)
    if reply_code:
        para(_("Keep the reply code: with the reference it opens the practice's answer "
               "to this form. Nobody else has it; the practice cannot look it up."),
             9.5, gap=0.5, color=(70, 70, 70))
    pdf.ln(3)
    pdf.set_draw_color(160, 160, 160)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
    pdf.ln(4)
    for a in sub.answers:
        para(a.label, 10.5, "B", 0.5)
        if a.type == "file":
            names = a.value if isinstance(a.value, list) else [a.value]
            value = "\n".join(f"• {n}" for n in names if n) or "—"
        elif a.type == "consent":  # the label above is the consent text already
            value = _("yes").capitalize() if a.value else "—"
        elif a.type in ("date", "birthdate") and isinstance(a.value, str) and a.value:
            value = answer_date(a.value, sub.lang)
        else:
            value = a.display() or "—"
        para(value, 10.5, gap=3.5)
    files = [u.filename for u in sub.uploads]
    if files:
        pdf.ln(1)
        para(_("Files you sent (not included in this copy)"), 10.5, "B", 0.5)
        para("\n".join(f"• {n}" for n in files), 10.5, gap=3.5)
    pdf.ln(2)
    para(_("This is a copy of what you sent. If something is wrong or you have a "
           "question, contact the practice: %(contact)s.") % {"contact": contact},
         9.5, gap=0, color=(70, 70, 70))
    return bytes(pdf.output())
