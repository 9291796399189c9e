"""Per-language texts of forms and fields (`label_en`, `title_en`, ...).

A form is configured in its own language (`lang`); optional `<key>_en` settings give
the English text of a question, its help and options, and of the form's title, notice
and introduction. The page shows the text for its language when there is one and the
configured text otherwise. What is stored and encrypted always uses the configured
(canonical) labels and choice values, so the clinician's data does not depend on the
language the patient read.
"""

from __future__ import annotations

from typing import Any


def text(spec: Any, key: str, lang: str) -> Any:
    """`spec.<key>_<lang>` when set, else the canonical `spec.<key>`."""
    value = getattr(spec, f"{key}_{lang}", None)
    return value if value else getattr(spec, key)


def choice_pairs(spec: Any, lang: str) -> list[tuple[str, str]]:
    """(stored value, shown text) for each option of a choice field."""
    return list(zip(spec.choices, text(spec, "choices", lang), strict=True))
