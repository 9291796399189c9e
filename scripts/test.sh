#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, then pytest (real gpg, rnp, SQLite,
# SMTP and Redis on loopback, and Chromium), then the tests that use the store a second
# time on PostgreSQL (FORMRELAY_TEST_DATABASE=postgresql: the tests start their own server).
# The second pass leaves out what does not touch the store (docs, packaging, layering,
# translations) and the browser and proxy tests (Chromium, Caddy, nginx, compose).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
exec env FORMRELAY_TEST_DATABASE=postgresql .venv/bin/python -m pytest -q -p no:cacheprovider \
  --ignore=tests/test_widget_browser.py --ignore=tests/test_clinician_browser.py \
  --ignore=tests/test_copy_web.py --ignore=tests/test_deploy.py --ignore=tests/test_demo.py \
  --ignore=tests/test_docs.py --ignore=tests/test_packaging.py --ignore=tests/test_imports.py \
  --ignore=tests/test_layers.py --ignore=tests/test_translations.py \
  --ignore=tests/test_readable.py "$@"
