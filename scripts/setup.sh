#!/usr/bin/env bash
# Install what formrelay needs on a Debian machine, then a virtualenv in .venv.
#   scripts/setup.sh          the service (gnupg, Python packages)
#   scripts/setup.sh --test   also the test tools (rnp, chromium, systemd tools, PostgreSQL
#                             for the tests to start their own server, test packages)
set -euo pipefail
cd "$(dirname "$0")/.."

# fonts: DejaVu Sans for patient-copy PDFs, Symbola for the emoji DejaVu lacks;
# tzdata: the zones zoneinfo reads for server.timezone
packages=(gnupg python3 python3-venv python3-pip ca-certificates fonts-dejavu-core fonts-symbola
  tzdata)
if [[ "${1:-}" == "--test" ]]; then
  # chromium-l10n: Chromium in Dutch for scripts/screenshot.py (date field "dd-mm-jjjj")
  # redis-server, postgresql: the tests start their own on loopback ports (tests/redisd.py,
  # tests/pg.py)
  # sq: Sequoia's command line, a third OpenPGP implementation the tests decrypt with
  packages+=(rnp sq chromium chromium-l10n systemd caddy nginx redis-server postgresql)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [[ "${1:-}" == "--test" ]]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
