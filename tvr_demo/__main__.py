"""`python -m tvr_demo <command>`."""

import os

# Idle OpenMP threads sleep instead of spinning: on a small shared CPU this is a 10x latency gain for one query
# (bench/README.md); set before torch loads OpenMP. An explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tvr_demo.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
