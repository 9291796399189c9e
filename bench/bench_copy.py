"""Patient copy: time to build a copy's PDF, and to issue + open one end to end.

Run: `python bench/bench_copy.py [N]`. Prints milliseconds per PDF for a short and a
long form (5000-character answers), with and without an emoji (which loads the fallback
font), the PDF size, and the time of `Copies.open` (checks + AES-GCM + PDF) on a temp
database. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from formrelay.config import parse_config  # noqa: E402
from formrelay.intake.submission import Answer, Submission  # noqa: E402
from formrelay.patient_copy.pdf import Practice, copy_pdf  # noqa: E402
from formrelay.patient_copy.secret import b64e  # noqa: E402
from formrelay.services import build  # noqa: E402


def sub(n_fields: int, length: int, emoji: bool) -> Submission:
    text = ("Pijn in de rechterknie bij traplopen, al drie weken. " * 100)[:length]
    if emoji:
        text += " 😀"
    answers = [Answer(f"q{i}", f"Vraag {i}", "textarea", text) for i in range(n_fields)]
    return Submission("FR-BENC-H234", "intake", "Intake", "nl", datetime.now(UTC), answers)


def timed(fn: object, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


def main(n: int) -> None:
    practice = Practice("Praktijk De Linde", "020 123 4567", "info@linde.nl")
    copy_pdf(sub(1, 10, False), practice)  # warm up imports
    print(f"{'case':<38} {'median ms':>10} {'max ms':>8} {'PDF KB':>7}")
    for label, s in [("8 short answers", sub(8, 80, False)),
                     ("8 short answers + emoji", sub(8, 80, True)),
                     ("8 answers of 5000 characters", sub(8, 5000, False))]:
        med, top = timed(lambda s=s: copy_pdf(s, practice), n)
        size = len(copy_pdf(s, practice)) / 1024
        print(f"{label:<38} {med:>10.1f} {top:>8.1f} {size:>7.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        raw = {"server": {"practice_name": "P", "practice_phone": "1", "data_dir": tmp},
               "smtp": {"sink_dir": tmp, "from_address": "a@b.nl"}}
        settings = parse_config(raw, Path(tmp) / "c.toml", {"FORMRELAY_SECRET_KEY": "k" * 40})
        services = build(settings, lambda: datetime.now(UTC))
        store, copies = services.store, services.copies

        from formrelay.settings import FormSpec

        spec = FormSpec(id="intake", title="Intake", recipients=["x"], patient_copy=True,
                        fields=())
        s = sub(8, 80, False)
        form = {"_copy": ["1"], "_copy_email": ["p@example.nl"]}
        opened: list[object] = []

        def issue_and_open() -> None:
            pending = copies.prepare(s, spec, form)
            assert pending is not None
            with store.transaction():
                token = copies.record(s, spec, pending)
            opened.append(copies.open(token, b64e(pending.secret), code=pending.code))

        med, top = timed(issue_and_open, n)
        print(f"{'issue + open (PDF, AES-GCM, SQLite)':<38} {med:>10.1f} {top:>8.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
