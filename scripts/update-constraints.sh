#!/usr/bin/env bash
# Refresh constraints.txt: resolve pyproject.toml's ranges anew in a throw-away venv (no constraints applied), then
# write the exact versions that resolved. Run the tests with the new pins (bash install.sh && .venv/bin/python -m
# pytest -q, on a fresh .venv) before committing the file.  Usage: bash scripts/update-constraints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q "torch==2.13.0"   # the CPU wheel; see install.sh
"$tmp/venv/bin/python" -m pip install -q ".[dev]"
{
  echo "# Exact versions the test suite passed with (CPU, Python 3.11). install.sh and .ci/run install with -c constraints.txt;"
  echo "# pyproject.toml keeps compatible ranges for users who bring their own environment."
  echo "# Regenerate (after changing pyproject.toml or to move to newer releases): bash scripts/update-constraints.sh"
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v -i '^fusebench' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > constraints.txt
echo "update-constraints: wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages); now run the tests on a fresh .venv"
