"""Where the project keeps its files: bundled checkpoints, generated data and caches."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = PROJECT_ROOT / "assets"
MODEL_CONFIG_DIR = ASSETS_DIR / "model_configs"
BUNDLED_CHECKPOINT_DIR = PROJECT_ROOT / "checkpoints"


def data_dir() -> Path:
    """Generated benchmarks live here (not committed); override with TVR_DEMO_DATA."""
    return Path(os.environ.get("TVR_DEMO_DATA", PROJECT_ROOT / "data"))


def default_dataset_dir() -> Path:
    """The bundled synthetic benchmark, generated on first use."""
    return data_dir() / "synthetic"


def cache_dir() -> Path:
    """Feature caches; override with TVR_DEMO_CACHE."""
    return Path(os.environ.get("TVR_DEMO_CACHE", PROJECT_ROOT / "cache"))
