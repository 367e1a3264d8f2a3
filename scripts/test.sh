#!/usr/bin/env bash
# The project's test command (the README's, and CI's): venv, dependencies, Chromium, then the suite with browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -r requirements-dev.txt
bash scripts/install_browser.sh
.venv/bin/ruff check .
.venv/bin/lint-imports  # the import contracts in .importlinter
.venv/bin/python -m pytest -m "not slow and not gpu" "$@"
