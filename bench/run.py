"""`python -m tvr_demo bench`: run the suite on the CPU (and on CUDA when present), print its tables, write JSON."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from bench.encode_bench import encode_rows
from bench.measure import log, machine_info, provenance
from bench.scoring_bench import block_sweep, scoring_rows
from bench.search_bench import engine_rows, two_stage_rows
from bench.tables import format_tables
from bench.threads_bench import threads_rows
from tvr_demo.kernels import serving_path


def run_suite(quick: bool = False, json_out: str | None = None) -> dict:
    """Every section on every device; --quick measures fewer rows and sizes (under two minutes on a 2-core CPU)."""
    start = time.perf_counter()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    result: dict = {"quick": quick, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **provenance(),
                    "load_average_start": [round(x, 2) for x in os.getloadavg()], "machines": {}, "scoring_path": {}, "scoring": [],
                    "block_sweep": [], "two_stage": [], "engine": [], "threads": [], "encode": [], "skipped": []}
    if not torch.cuda.is_available():
        result["skipped"].append({"row": "every cuda row (Triton kernel included)", "reason": "no CUDA device"})
    with torch.no_grad():
        for device in devices:
            machine = machine_info(device)
            result["machines"][str(device)] = machine
            serving_path(device)  # on CUDA: the Triton kernel's self-check, before any row is timed
            for row in scoring_rows(device, machine, quick):
                if "skipped" in row:
                    result["skipped"].append({"row": f"{row['workload']} on {row['device']}",
                                              "reason": row["skipped"]})
                else:
                    result["scoring"].append(row)
            path = serving_path(device)  # after the rows: a kernel that failed on one of them is reported
            result["scoring_path"][str(device)] = path.as_dict()
            if not quick:
                result["block_sweep"] += block_sweep(device)
            rows, skipped = encode_rows(device, quick)
            result["encode"] += rows
            result["skipped"] += skipped
        result["two_stage"] = two_stage_rows(quick)
    rows, skipped = engine_rows(quick)
    result["engine"], result["skipped"] = rows, result["skipped"] + skipped
    if not quick:
        result["threads"] = threads_rows()
    result["elapsed_s"] = round(time.perf_counter() - start, 1)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(format_tables(result))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {json_out}")
    return result
