"""An installed (non-editable) formrelay carries everything it serves."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_wheel_carries_widget_templates_translations(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("formrelay-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("formrelay/widgets/formrelay.js") == \
            (ROOT / "widgets" / "formrelay.js").read_bytes()
    for needed in ("formrelay/templates/form.html", "formrelay/static/frame.js",
                   "formrelay/translations/nl/LC_MESSAGES/messages.po"):
        assert needed in names
