#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, then pytest (real gpg, rnp, SQLite,
# SMTP and Redis on loopback, and Chromium), then the tests that use the store a second
# time on PostgreSQL (FORMRELAY_TEST_DATABASE=postgresql: the tests start their own server).
# The second pass selects itself (tests/conftest.py): the tests that request the
# `database` fixture run, the rest (docs, packaging, layering, translations, and the
# browser and proxy tests marked sqlite_only) are deselected.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
exec env FORMRELAY_TEST_DATABASE=postgresql .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
