#!/usr/bin/env bash
# Set up a machine for wavelens: the system packages DEVELOPERS.md lists (installed
# with apt-get when missing and we are root or have password-less sudo; otherwise
# a message says what to install), then a virtual environment .venv with wavelens
# and its test dependencies. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
sync=0
for argument in "$@"; do
  case "$argument" in
    --sync) sync=1 ;;  # reinstall every locked package, whatever the stamp says
    *) echo "usage: scripts/setup.sh [--sync]" >&2; exit 2 ;;
  esac
done

# -- system packages: the list lives in DEVELOPERS.md between the two markers ------
packages=$(sed -n '/<!-- system-packages:begin -->/,/<!-- system-packages:end -->/p' DEVELOPERS.md \
  | grep -E '^\s*-\s*`[a-z0-9.+-]+`' | sed -E 's/^\s*-\s*`([^`]+)`.*/\1/')
missing=()
system_required=0  # whether the system packages are ours to install, so must work
for package in $packages; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
if command -v apt-get >/dev/null && [ "$sudo" != none ] && [ "${WAVELENS_SKIP_APT:-0}" != 1 ]; then
  system_required=1
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$system_required" = 1 ]; then
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
# Everything comes from requirements.lock, with hashes: first the installers and
# build tools, then the rest without build isolation (so that a package built from
# source, pesq, builds with the locked tools and not whatever the registry serves
# that day), then wavelens itself. The stamp holds the digest of the lock and of
# pyproject.toml it was installed from; `--sync` installs again regardless.
lock=requirements.lock
stamp="$VENV/.wavelens-installed"
digest=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$sync" = 1 ] || [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "setup: installing the locked dependencies into $VENV (from $lock; torch takes a few minutes)"
  rm -f "$stamp"
  pip=("$VENV/bin/python" -m pip install --quiet --quiet --disable-pip-version-check)
  build_tools=$(mktemp)
  trap 'rm -f "$build_tools"' EXIT
  "$VENV/bin/python" framework/_environment.py select "$lock" pip setuptools wheel cython pytest-runner numpy \
    > "$build_tools"
  "${pip[@]}" --require-hashes --no-deps -r "$build_tools"
  # pesq's setup.py, built here, warns about deprecated setuptools APIs: not ours to fix.
  PYTHONWARNINGS=ignore "${pip[@]}" --require-hashes --no-deps --no-build-isolation -r "$lock"
  "${pip[@]}" --no-deps --no-build-isolation -e .
  echo "$digest" > "$stamp"
fi

# -- the check: a broken environment stops here, one line per broken package ------
if [ "$system_required" = 1 ]; then system=require; else system=warn; fi
"$VENV/bin/python" scripts/check_environment.py --lock "$lock" --system "$system"
