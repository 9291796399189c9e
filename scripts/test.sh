#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, then pytest (real gpg, rnp, SQLite,
# SMTP and Redis on loopback, and Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
