#!/usr/bin/env bash
# Refresh requirements.lock: resolve pyproject.toml's dependencies (with the test,
# gamm and cluster extras) and the build tools in scripts/build-requirements.in to the
# newest versions the registry serves today, for every platform and every Python
# wavelens supports, with hashes. Run it deliberately (`make lock`), then run the
# suite on the new lock before committing it (docs/environment.md).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
tools=build/lock-tools
if [ ! -x "$tools/bin/uv" ] || [ "$("$tools/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet "uv==$UV_VERSION"
fi
# uv reads no pip configuration (extra indexes, find-links, constraints of this
# machine): the lock describes what the default index serves to everyone.
"$tools/bin/uv" pip compile pyproject.toml scripts/build-requirements.in \
  --extra test --extra gamm --extra cluster \
  --universal --python-version 3.10 \
  --generate-hashes \
  --custom-compile-command "make lock" \
  --output-file requirements.lock "$@"
