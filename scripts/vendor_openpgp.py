"""Fetch OpenPGP.js again from the npm registry and check it is the file formrelay ships.

formrelay serves the browser reader's OpenPGP.js from its own package (no CDN, nothing
fetched at run time); `formrelay/static/vendor/openpgp.json` records which release, from
which file of the npm package, and its SHA-256. This script asks the registry for that
release's integrity (`npm view`), downloads it (`npm pack`), checks the tarball against
that integrity, and compares the file inside with the recorded hash and with the file in
the repository. Exit 0: identical; exit 1: anything differs (the message says what).

    .venv/bin/python scripts/vendor_openpgp.py            # verify the vendored copy
    .venv/bin/python scripts/vendor_openpgp.py --update 6  # vendor the newest 6.x instead

After --update, run the reader tests; the templates pick the new file and its SRI hash up
from openpgp.json.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "formrelay" / "static" / "vendor"
RECORD = VENDOR / "openpgp.json"


def npm(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True,  # noqa: S603, S607 - npm from PATH
                          timeout=300, check=False)
    if done.returncode != 0:
        sys.exit(f"npm {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def fetch(spec: str, inner: str, work: Path) -> tuple[str, str, bytes, bytes]:
    """(version, registry integrity, the file, the package's LICENSE) of `spec`."""
    meta = json.loads(npm("view", spec, "version", "dist.integrity", "--json"))
    if isinstance(meta, list):  # a range: npm lists every match, newest last
        meta = meta[-1]
    version, integrity = meta["version"], meta["dist.integrity"]
    name = npm("pack", f"openpgp@{version}", "--silent", cwd=work).splitlines()[-1]
    tarball = (work / name).read_bytes()
    algo, _, want = integrity.partition("-")
    got = base64.b64encode(hashlib.new(algo, tarball).digest()).decode()
    if got != want:
        sys.exit(f"the tarball of openpgp {version} does not match the registry's "
                 f"integrity {integrity}: do not use it")
    with tarfile.open(work / name) as tar:
        def read(member: str) -> bytes:
            fh = tar.extractfile(member)
            if fh is None:
                sys.exit(f"{member} is not in openpgp {version}")
            return fh.read()

        return version, integrity, read(f"package/{inner}"), read("package/LICENSE")


def main(argv: list[str]) -> int:
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    update = argv[1] if len(argv) > 2 and argv[1] == "--update" else ""
    spec = f"openpgp@{argv[2]}" if update else f"openpgp@{record['version']}"
    with tempfile.TemporaryDirectory() as tmp:
        version, integrity, data, licence = fetch(spec, record["from"], Path(tmp))
    sha = hashlib.sha256(data).hexdigest()
    if update:
        (VENDOR / record["file"]).unlink(missing_ok=True)
        record.update(version=version, npm_integrity=integrity, sha256=sha,
                      file=f"openpgp-{version}.min.js")
        (VENDOR / record["file"]).write_bytes(data)
        (VENDOR / record["license_file"]).write_bytes(licence)
        RECORD.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"vendored openpgp {version}: {record['file']} sha256 {sha}")
        return 0
    problems = []
    if integrity != record["npm_integrity"]:
        problems.append(f"the registry's integrity is now {integrity}, "
                        f"recorded {record['npm_integrity']}")
    if sha != record["sha256"]:
        problems.append(f"{record['from']} of {version} has sha256 {sha}, "
                        f"recorded {record['sha256']}")
    shipped = hashlib.sha256((VENDOR / record["file"]).read_bytes()).hexdigest()
    if shipped != record["sha256"]:
        problems.append(f"{record['file']} in the repository has sha256 {shipped}, "
                        f"recorded {record['sha256']}")
    if (VENDOR / record["license_file"]).read_bytes() != licence:
        problems.append(f"{record['license_file']} differs from the package's LICENSE")
    for p in problems:
        print(f"MISMATCH: {p}", file=sys.stderr)
    if not problems:
        print(f"ok: openpgp {version} from the npm registry is the vendored "
              f"{record['file']} (sha256 {sha})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
