#!/usr/bin/env bash
# The prepared device check (bench/gpu_check.py; bench/README.md gives the one device call):
#   bash bench/gpu_check.sh prepare DIR [--no-wheels] [--n-test N]   here: wheels, the test split, the reference clip
#   bash bench/gpu_check.sh run DIR OUT [--budget-s S]               there: installs DIR's wheels, runs, writes OUT
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
step=${1:-}
case "$step" in
    prepare)
        shift
        exec "$PY" -m bench.gpu_check prepare "$@"
        ;;
    run)
        [ $# -ge 3 ] || { echo "usage: bash bench/gpu_check.sh run DIR OUT" >&2; exit 2; }
        dir=$(cd "$2" && pwd)
        if compgen -G "$dir/wheels/*.whl" >/dev/null; then  # the packages the GPU machine lacks, beside its own
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$dir/site" \
                "$dir"/wheels/*.whl
            export PYTHONPATH="$dir/site${PYTHONPATH:+:$PYTHONPATH}"
        fi
        export PYTHONUNBUFFERED=1
        shift
        exec "$PY" -m bench.gpu_check run "$@"
        ;;
    *)
        echo "usage: bash bench/gpu_check.sh prepare DIR [--no-wheels] [--n-test N] | run DIR OUT" >&2
        exit 2
        ;;
esac
