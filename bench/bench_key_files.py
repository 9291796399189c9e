"""What the key-file check of a reload costs (issue 20.4): `crypto/keyfiles.check_key_files`
reads each recipient's key file and its packets (no gpg run), against what the same
check would cost with one `gpg --show-keys` per file.

    .venv/bin/python bench/bench_key_files.py                 # 200 recipients
    .venv/bin/python bench/bench_key_files.py --recipients 50

A config with that many practices, each with one recipient whose key file is a copy of
one throw-away curve key (the check reads every file whatever it holds). Reported: the
median of 5 runs of the check over all recipients, the median of `load_config` on the
same files for scale, and the gpg alternative (one run over 20 files, scaled).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import SECRET, make_key, table  # noqa: E402
from formrelay.config import load_config  # noqa: E402
from formrelay.crypto.keyfiles import check_key_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=200)
    n = parser.parse_args().recipients
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fpr, public = make_key(root)
        lines = ['[server]\ndata_dir = "data"\n', '[smtp]\nfrom_address = "f@x.test"\n'
                 f'sink_dir = "{root / "mail"}"\n']
        for i in range(n):
            key = root / "keys" / f"r{i:03}.asc"
            key.parent.mkdir(exist_ok=True)
            shutil.copy(public, key)
            lines.append(f'[practices.p{i:03}]\nname = "Praktijk {i}"\nphone = "0"\n'
                         f'[practices.p{i:03}.recipients.r{i:03}]\nemail = "r@x.test"\n'
                         f'key_file = "keys/r{i:03}.asc"\nfingerprint = "{fpr}"\n'
                         f'[practices.p{i:03}.forms.f{i:03}]\ntitle = "F"\ndelivery = "hold"\n'
                         f'recipients = ["r{i:03}"]\n[[practices.p{i:03}.forms.f{i:03}.fields]]\n'
                         'name = "a"\ntype = "text"\nlabel = "A"\n')
        config = root / "config.toml"
        config.write_text("\n".join(lines))
        env = {"FORMRELAY_SECRET_KEY": SECRET}

        def median_ms(fn: object, runs: int = 5) -> float:
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fn()  # type: ignore[operator]
                times.append((time.perf_counter() - start) * 1000)
            return statistics.median(times)

        settings = load_config(config, env)
        load_ms = median_ms(lambda: load_config(config, env))
        check_ms = median_ms(lambda: check_key_files(settings))
        home = root / "gpg-home"
        home.mkdir(mode=0o700)
        files = sorted((root / "keys").glob("*.asc"))[:20]
        start = time.perf_counter()
        for f in files:
            subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-autostart",
                            "--with-colons", "--show-keys", str(f)], check=True,
                           capture_output=True, timeout=60)
        gpg_ms = (time.perf_counter() - start) * 1000 / len(files) * n
        print(table(["recipients", "load_config ms", "check_key_files ms",
                     "gpg --show-keys per file, ms (scaled)"],
                    [[n, f"{load_ms:.0f}", f"{check_ms:.1f}", f"{gpg_ms:.0f}"]]))


if __name__ == "__main__":
    main()
