"""The benchmark suite behind `python -m tvr_demo bench`: scoring (official loop vs batched vs fused), two-stage
search, engine latency and encode throughput. Results and how to read them: bench/README.md."""

import os

# Idle OpenMP threads sleep instead of spinning. On a shared CPU (the bench machine trains other models meanwhile) a
# spinning pool stalls every small op for milliseconds; the "threads" rows measure it with and without this. It only
# takes effect when torch has not been imported yet, as under `python -m tvr_demo bench`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
