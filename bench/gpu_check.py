"""The prepared device check, in two steps (bench/gpu_check.sh wraps them; bench/README.md gives the one call):

    prepare DIR   here, with the package registries: the wheels the GPU machine lacks, the bundled test split in
                  MSR-VTT's layout, the real reference clip when the folder beside the checkout has it; prints the size that travels
    run DIR OUT   there, without network: `pytest -m gpu`, the bench's CUDA rows (the race, both fused paths, the
                  block sweep, encode throughput) and an Engine on CUDA against one on the CPU; one JSON in OUT

Without CUDA, `run` runs the (skipping) GPU tests, skips the CUDA rows and says so in the JSON.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the check imports that the GPU machine's image lacks (its package list: the device notes' KINDS.md); the
# rest (torch, triton, numpy, scipy, safetensors, timm, regex, pytest, ...) is there.
WHEELS = ("open_clip_torch", "ftfy", "wcwidth", "decord")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux2010_x86_64", "manylinux1_x86_64")
TRAVEL_LIMIT = 64 * 2**20  # what one device call carries: the repo's files and the carried folders together
GPU_TESTS = ("tests/test_kernels.py", "tests/test_kernel_selfcheck.py", "tests/test_kernel_blocks.py",
             "tests/test_gpu_engine.py")
REFERENCE_CLIP = ROOT.parent / "shared" / "reference" / "msrvtt" / "video7500.mp4"
CHECK_NAME = "gpu_check.json"
TINY_SPLIT = 24  # clips of the gallery `pytest -m gpu` compares engines on (the Engine comparison takes them all)
TYPED_QUERIES = ["a red circle moves to the left", "two blue squares", "a small green triangle", "a big shape grows",
                 "something turns around", "a yellow disc on the right", "three shapes", "an orange cross"]


def _log(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- prepare (on a machine with the registries)


def download_wheels(target: Path) -> list[Path]:
    """cp312 manylinux wheels of WHEELS at the versions installed here, without their dependencies."""
    target.mkdir(parents=True, exist_ok=True)
    for name in WHEELS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"error: {name} is not installed for {sys.executable}; run prepare with the project's "
                             "Python (PYTHON=.venv/bin/python): its version picks the wheel") from None
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *platforms, "-d", str(target), f"{name}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: no cp312 manylinux wheel of {name}=={version}: {done.stderr.strip()[-300:]}")
        _log(f"wheel {name}=={version}")
    return sorted(target.glob("*.whl"))


def render_test_split(target: Path, n_test: int | None = None) -> Path:
    """The bundled benchmark's test split (or `n_test` clips of it) as MSR-VTT lays a split out: the test CSV and
    videos/videoN.mp4, nothing else."""
    from tvr_demo.data.loaders import load_benchmark
    from tvr_demo.data.synthetic import SyntheticConfig, generate

    config = SyntheticConfig() if n_test is None else SyntheticConfig(n_train=0, n_val=0, n_test=n_test)
    with tempfile.TemporaryDirectory() as tmp:
        source = generate(Path(tmp) / "bench", config, progress=False, splits=("test",))
        bench = load_benchmark(source, "test")
        shutil.rmtree(target, ignore_errors=True)
        (target / "videos").mkdir(parents=True)
        shutil.copy2(source / "MSRVTT_JSFUSION_test.csv", target)
        for path in bench.video_paths:
            shutil.copy2(path, target / "videos" / path.name)
    _log(f"rendered {bench.num_videos} test clips, {bench.num_captions} captions into {target}")
    return target


def _git_files(*args: str) -> list[Path]:
    done = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, capture_output=True, text=True)
    return [ROOT / p for p in done.stdout.split("\0") if p]


def travelling_bytes(folder: Path) -> dict[str, int]:
    """Bytes a device call carries: the repo's tracked files, its untracked files that git does not ignore, and
    `folder` (named in the call's carry list)."""
    def size(paths) -> int:
        return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())

    folder = folder.resolve()
    loose = [p for p in _git_files("--others", "--exclude-standard") if folder not in p.resolve().parents]
    return {"tracked": size(_git_files()), "untracked": size(loose), "carried": size(folder.rglob("*"))}


def prepare(folder: Path, wheels: bool = True, n_test: int | None = None) -> dict[str, int]:
    folder.mkdir(parents=True, exist_ok=True)
    if wheels:
        download_wheels(folder / "wheels")
    render_test_split(folder / "msrvtt", n_test)
    render_test_split(folder / "tiny", min(TINY_SPLIT, n_test or TINY_SPLIT))  # pytest's Engine test: seconds
    if REFERENCE_CLIP.is_file():  # the encode rows decode it; it travels in the carried folder, never in the repo
        (folder / "reference").mkdir(exist_ok=True)
        shutil.copy2(REFERENCE_CLIP, folder / "reference" / REFERENCE_CLIP.name)
    sizes = travelling_bytes(folder)
    total = sum(sizes.values())
    parts = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items())
    print(f"travels: {total / 2**20:.1f} MiB of {TRAVEL_LIMIT / 2**20:.0f} MiB ({parts})")
    if total > TRAVEL_LIMIT:
        print("error: over the device call's limit; commit or remove untracked files, or carry less", file=sys.stderr)
    return sizes


# ---------------------------------------------------------------- run (on the GPU machine)


def run_gpu_tests(folder: Path, cache: Path) -> dict:
    """`pytest -m gpu` on the GPU test files, the Engine test on the rendered split."""
    env = {**os.environ, "TVR_DEMO_GPU_GALLERY": str(folder / "tiny"), "TVR_DEMO_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "gpu", "-q", "-rs", *GPU_TESTS]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    return {"returncode": done.returncode, "summary": lines[-1] if lines else "", "seconds":
            round(time.perf_counter() - t0, 1), "tail": "\n".join(lines[-40:]) + done.stderr[-2000:]}


def _search_ms(engine, queries: list[str]) -> list[float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        engine.search_text(q)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def compare_engines(gallery: Path, cache: Path, checkpoint: str = "drl-wti",
                    devices: dict[str, str] | None = None) -> dict:
    """The same checkpoint and gallery on CUDA and on the CPU (`devices`: label -> device, for a test on the CPU):
    metrics, score differences, rankings, and typed-query latency (the first search after what Session.warm does,
    then the median)."""
    import numpy as np

    import tvr_demo

    out: dict = {"checkpoint": checkpoint, "gallery": str(gallery)}
    engines = {}
    for label, device in (devices or {"cuda": "cuda", "cpu": "cpu"}).items():
        os.environ["TVR_DEMO_CACHE"] = str(cache / label)  # the gallery key does not hold the device
        t0 = time.perf_counter()
        engine = tvr_demo.load(checkpoint, dataset=gallery, device=device, progress=False)
        opened = time.perf_counter() - t0
        t0 = time.perf_counter()
        _ = engine.matrices  # what Session.warm does first
        matrices = time.perf_counter() - t0
        first = _search_ms(engine, TYPED_QUERIES[:1])[0]
        warm = _search_ms(engine, TYPED_QUERIES[1:] * 3)
        out[label] = {"device": device, "open_s": round(opened, 1), "matrices_s": round(matrices, 2),
                      "first_search_ms": round(first, 1), "search_p50_ms": round(statistics.median(warm), 2),
                      "metrics": engine.evaluate()}
        engines[label] = engine
        _log(f"engine on {device}: first search {first:.1f} ms, then p50 {statistics.median(warm):.2f} ms")
    got, want = engines["cuda"].matrices["latent"], engines["cpu"].matrices["latent"]
    out["latent_max_abs_diff"] = float(np.abs(got - want).max())
    out["same_top1_fraction"] = float((got.argmax(1) == want.argmax(1)).mean())
    out["same_top10_fraction"] = float(np.mean([set(np.argsort(-g)[:10]) == set(np.argsort(-w)[:10])
                                                for g, w in zip(got, want, strict=True)]))
    return out


def _write(out: Path, result: dict) -> None:
    (out / CHECK_NAME).write_text(json.dumps(result, indent=2, default=str) + "\n")


def run(folder: Path, out: Path, budget_s: float = 300.0) -> dict:
    """Every step in turn, the JSON rewritten after each (a run stopped at its limit still returns what it did)."""
    import torch

    from bench.measure import provenance

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    # the bench suite's keys (bench/run.py), so that the JSON renders in bench/README.md once committed to results/
    result: dict = {"gpu_check": True, "quick": False, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **provenance(),
                    "load_average_start": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
                    "cuda": cuda, "device_name": torch.cuda.get_device_name(0) if cuda else None, "machines": {},
                    "scoring_path": {}, "scoring": [], "block_sweep": [], "two_stage": [], "engine": [], "threads": [],
                    "encode": [], "skipped": []}
    cache = Path(tempfile.mkdtemp(prefix="gpu_check_cache_"))
    _log("pytest -m gpu")
    result["pytest"] = run_gpu_tests(folder, cache / "pytest")
    _log(result["pytest"]["summary"])
    _write(out, result)
    if not cuda:
        result["skipped"].append({"row": "the bench's CUDA rows and the Engine CUDA-vs-CPU comparison",
                                  "reason": "no CUDA device"})
        _log("no CUDA device: the bench's CUDA rows and the Engine comparison are skipped")
    else:
        _cuda_steps(folder, cache, result, out, start, budget_s)
    result["elapsed_s"] = round(time.perf_counter() - start, 1)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    _write(out, result)
    shutil.rmtree(cache, ignore_errors=True)
    return result


def _cuda_steps(folder: Path, cache: Path, result: dict, out: Path, start: float, budget_s: float) -> None:
    import torch

    from bench.encode_bench import encode_rows
    from bench.measure import machine_info
    from bench.scoring_bench import block_sweep, gpu_workloads, scoring_rows
    from tvr_demo.kernels import serving_path

    device = torch.device("cuda")
    steps = [
        ("machines", lambda: {"cuda": machine_info(device)}),
        ("scoring_path", lambda: {"cuda": serving_path(device).as_dict()}),  # the self-check and the race
        ("engine_comparison", lambda: compare_engines(folder / "msrvtt", cache / "engine")),
        ("scoring", lambda: scoring_rows(device, result["machines"]["cuda"], quick=False, works=gpu_workloads())),
        ("block_sweep", lambda: block_sweep(device)),
        ("encode", lambda: encode_rows(device, quick=False, clip=folder / "reference" / REFERENCE_CLIP.name)),
    ]
    with torch.no_grad():
        for name, step in steps:
            if time.perf_counter() - start > budget_s:
                result["skipped"].append({"row": name, "reason": f"the check's {budget_s:.0f} s budget was spent"})
                continue
            _log(name)
            t0 = time.perf_counter()
            try:
                value = step()
            except Exception as err:  # one failing step must not cost the others' numbers
                result["skipped"].append({"row": name, "reason": f"{type(err).__name__}: {str(err)[:500]}"})
                _log(f"{name} failed: {type(err).__name__}: {err}")
                continue
            if name == "encode":
                value, skipped = value
                result["skipped"] += skipped
            if name == "scoring":
                result["skipped"] += [{"row": f"{r['workload']} on {r['device']}", "reason": r["skipped"]}
                                      for r in value if "skipped" in r]
                value = [r for r in value if "skipped" not in r]
            result[name] = value
            result.setdefault("step_seconds", {})[name] = round(time.perf_counter() - t0, 1)
            _write(out, result)
            torch.cuda.empty_cache()


def summary(result: dict) -> str:
    """The last lines the device tool hands back: what the next session reads first."""
    lines = [f"pytest -m gpu: {result['pytest']['summary']} (exit {result['pytest']['returncode']})"]
    for path in result["scoring_path"].values():
        lines.append(f"scoring path: {path['path']} ({path['reason']})")
    for row in result["scoring"]:
        paths = row.get("cuda_paths", {})
        cells = [f"(b) {row['variants']['batched'].get('ms')}"] + [
            f"{name} {p['ms']} (first {p['first_ms']})" for name, p in paths.items()]
        lines.append(f"{row['workload']}: " + ", ".join(cells) + f" ms; roofline {row['roofline_ms']} ms")
    engine = result.get("engine_comparison")
    if engine:
        lines.append(f"engine: latent max |cuda - cpu| {engine['latent_max_abs_diff']:.2e}, same top-1 "
                     f"{engine['same_top1_fraction']:.3f}; first search cuda {engine['cuda']['first_search_ms']} ms, "
                     f"p50 {engine['cuda']['search_p50_ms']} ms (cpu {engine['cpu']['search_p50_ms']} ms)")
    for row in result["encode"]:
        lines.append(f"encode {row['model']} {row['stage']}: {row['clips_per_s']} clips/s "
                     f"({row.get('decode_workers')} decode workers)")
    lines += [f"skipped {s['row']}: {s['reason']}" for s in result["skipped"]]
    lines.append(f"elapsed {result.get('elapsed_s')} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu_check.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="wheels, the rendered test split and the reference clip into DIR")
    p.add_argument("dir", type=Path)
    p.add_argument("--no-wheels", action="store_true", help="skip the wheel download (tests; an offline machine)")
    p.add_argument("--n-test", type=int, default=None, help="render this many test clips (default: the split)")
    p = sub.add_parser("run", help="on the GPU machine: the tests, the CUDA rows, the Engine comparison")
    p.add_argument("dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--budget-s", type=float, default=300.0, help="start no step after this many seconds")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        sizes = prepare(args.dir, wheels=not args.no_wheels, n_test=args.n_test)
        return int(sum(sizes.values()) > TRAVEL_LIMIT)
    result = run(args.dir, args.out, args.budget_s)
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
