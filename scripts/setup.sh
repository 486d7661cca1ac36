#!/usr/bin/env bash
# Set up a machine for wavelens: the system packages DEVELOPERS.md lists (installed
# with apt-get when missing and we are root or have password-less sudo; otherwise
# a message says what to install), then a virtual environment .venv with wavelens
# and its test dependencies. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# -- system packages: the list lives in DEVELOPERS.md between the two markers ------
packages=$(sed -n '/<!-- system-packages:begin -->/,/<!-- system-packages:end -->/p' DEVELOPERS.md \
  | grep -E '^\s*-\s*`[a-z0-9.+-]+`' | sed -E 's/^\s*-\s*`([^`]+)`.*/\1/')
missing=()
for package in $packages; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
  if command -v apt-get >/dev/null && [ "$sudo" != none ] && [ "${WAVELENS_SKIP_APT:-0}" != 1 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: these system packages are missing: ${missing[*]}" >&2
    echo "setup: install them with: sudo apt-get install ${missing[*]}" >&2
    echo "setup: until then, the tests that need them are skipped (see DEVELOPERS.md)" >&2
  fi
fi

# -- Python ---------------------------------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup: wavelens needs Python >= 3.10; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  echo "setup: set PYTHON=/path/to/python3.x and run again." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.wavelens-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing wavelens and its dependencies into $VENV (torch takes a minute)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e '.[test]'
  touch "$stamp"
fi
