#!/usr/bin/env bash
# The project's test command (the README's, and CI's): venv, dependencies, Chromium, then the suite with browser tests;
# on a machine with CUDA also the gpu-marked tests (CI has no GPU, so there nothing changes).
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
if .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    # a CUDA machine without triton fails here (tests/test_kernel_selfcheck.py), it is not skipped; exit 5 = the
    # paths given hold no gpu test
    .venv/bin/python -m pytest -m gpu "$@" || [ $? -eq 5 ]
fi
