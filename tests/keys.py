"""Test keys, made once per session with the real gpg (fast curve keys)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestKey:
    name: str
    fingerprint: str
    public: Path  # exported public key (.asc)
    secret: Path | None  # exported secret key (.asc), for gpg/rnp decryption in tests
    home: Path  # a GnuPG home holding the secret key

    __test__ = False


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-random-seed-file",
                           "--pinentry-mode", "loopback", "--passphrase", "", *args],
                          input=stdin, check=True, capture_output=True, timeout=120).stdout


def make_key(root: Path, name: str, algo: str = "future-default", usage: str = "default",
             expire: str = "2y", faked_time: str | None = None, revoke: bool = False,
             add_encryption: str = "") -> TestKey:
    home = root / name
    home.mkdir(mode=0o700, parents=True)
    extra = ["--faked-system-time", faked_time] if faked_time else []
    _gpg(home, *extra, "--quick-gen-key", f"{name} <{name}@praktijk.test>", algo, usage, expire)
    out = _gpg(home, "--with-colons", "--list-keys").decode()
    fpr = next(ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:"))
    if revoke:
        rev = (home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
        _gpg(home, "--import", stdin=rev.replace(":-----BEGIN", "-----BEGIN").encode())
    if add_encryption:
        _gpg(home, "--quick-add-key", fpr, add_encryption, "encr", expire)
    pub = root / f"{name}.pub.asc"
    pub.write_bytes(_gpg(home, "--armor", "--export", fpr))
    sec = root / f"{name}.sec.asc"
    sec.write_bytes(_gpg(home, "--armor", "--export-secret-keys", fpr))
    return TestKey(name, fpr, pub, sec, home)


def make_all(root: Path) -> dict[str, TestKey]:
    keys = {
        "alice": make_key(root, "alice"),
        "bob": make_key(root, "bob", algo="rsa2048", add_encryption="rsa2048"),
        "expired": make_key(root, "expired", expire="1d", faked_time="20200101T000000"),
        "revoked": make_key(root, "revoked", revoke=True),
        "signonly": make_key(root, "signonly", algo="ed25519", usage="sign"),
        "weak": make_key(root, "weak", algo="rsa1024", add_encryption="rsa1024"),
        "soon": make_key(root, "soon", expire="10d"),
    }
    return keys


def gpg_decrypt(key: TestKey, data: bytes) -> bytes:
    return _gpg(key.home, "--decrypt", stdin=data)


def rnp_decrypt(key: TestKey, data: bytes) -> bytes:
    assert key.secret is not None
    return subprocess.run(["rnp", "--keyfile", str(key.secret), "--password", "",
                           "--decrypt", "--output", "-"], input=data, check=True,
                          capture_output=True, timeout=120).stdout


def packet_tags(key: TestKey, data: bytes) -> list[str]:
    """The packet types gpg sees in a message (e.g. 'pubkey enc packet',
    'encrypted data packet' with mdc_method, or 'aead encrypted packet')."""
    out = subprocess.run(["gpg", "--homedir", str(key.home), "--batch", "--list-packets"],
                         input=data, capture_output=True, timeout=120).stdout.decode()
    return [ln.strip() for ln in out.splitlines() if ln.startswith(":") or "mdc_method" in ln]
