#!/usr/bin/env bash
# Set up and run `formrelay demo` (service + throw-away key + mail folder) on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/formrelay demo "$@"
