"""OpenPGP and sealing: the GnuPG keyring (keyring.py), PGP packet checks (packets.py) and
AES-GCM sealing of values at rest (sealing.py)."""
