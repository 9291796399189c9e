"""The practice's look for the form: colours, font and corner radius as CSS variables.

`[theme]` in the config sets a few values; `problems()` checks them (syntax that cannot
break out of a CSS declaration, and WCAG AA contrast, so no practice can configure an
unreadable form); `stylesheet()` turns them into a tiny stylesheet served as
/theme.css (CSP `style-src 'self'` allows no inline styles).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import ThemeSettings

COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
FONT = re.compile(r"[A-Za-z0-9 ,\"'\-]{1,200}")
RADIUS = re.compile(r"0|(?:\d{1,2}(?:\.\d{1,2})?)(?:px|rem|em)")
MIN_CONTRAST = 4.5  # WCAG 2.1 AA for normal text


def _rgb(colour: str) -> tuple[float, float, float]:
    h = colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    r, g, b = (int(h[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return r, g, b


def luminance(colour: str) -> float:
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def problems(theme: ThemeSettings) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each unusable value."""
    out: list[tuple[str, str, str]] = []
    for key in ("accent", "text", "background"):
        value = getattr(theme, key)
        if not COLOUR.fullmatch(value):
            out.append((key, f"{value!r} is not a colour", "write it as #rrggbb, e.g. #1f5f8b"))
    if not FONT.fullmatch(theme.font):
        out.append(("font", f"{theme.font!r} is not a font list",
                    "use font names separated by commas, e.g. \"Open Sans\", sans-serif"))
    if not RADIUS.fullmatch(theme.radius):
        out.append(("radius", f"{theme.radius!r} is not a size", "e.g. 6px, 0.4rem or 0"))
    if out:
        return out
    pairs = (("text", theme.text, theme.background, "text on the background"),
             ("accent", "#ffffff", theme.accent, "white button text on the accent colour"),
             ("accent", theme.accent, theme.background, "links in the accent colour"))
    for key, fg, bg, what in pairs:
        ratio = contrast(fg, bg)
        if ratio < MIN_CONTRAST:
            out.append((key, f"{what} has contrast {ratio:.1f}:1, below {MIN_CONTRAST}:1",
                        "choose a darker (or, for the background, lighter) colour"))
    return out


def stylesheet(theme: ThemeSettings) -> str:
    return (":root{"
            f"--fr-accent:{theme.accent};--fr-text:{theme.text};--fr-bg:{theme.background};"
            f"--fr-font:{theme.font};--fr-radius:{theme.radius}"
            "}\n")


def version(theme: ThemeSettings) -> str:
    return hashlib.sha256(stylesheet(theme).encode()).hexdigest()[:12]
