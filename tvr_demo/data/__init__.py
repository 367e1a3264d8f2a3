"""Benchmarks: the in-memory split (`Benchmark`), the format readers, and the synthetic generator."""

from tvr_demo.data.benchmark import Benchmark
from tvr_demo.data.loaders import detect_kind, load_benchmark

__all__ = ["Benchmark", "detect_kind", "load_benchmark"]
