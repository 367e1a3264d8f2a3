"""Where the project keeps its files: bundled checkpoints, generated data and caches."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A checkout keeps assets/ and checkpoints/ beside the package and writes data/ and cache/ there (not committed).
# `pip install .` puts assets/ and checkpoints/ under the install's data prefix as share/tvr_demo/ (pyproject.toml's
# data-files), and what the app generates goes to the user's cache folder.
IN_CHECKOUT = (PROJECT_ROOT / "assets").is_dir()
BUNDLED_ROOT = PROJECT_ROOT if IN_CHECKOUT else Path(sysconfig.get_path("data")) / "share" / "tvr_demo"
ASSETS_DIR = BUNDLED_ROOT / "assets"
MODEL_CONFIG_DIR = ASSETS_DIR / "model_configs"
BUNDLED_CHECKPOINT_DIR = BUNDLED_ROOT / "checkpoints"
_WORK_ROOT = PROJECT_ROOT if IN_CHECKOUT else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tvr_demo"


def data_dir() -> Path:
    """Generated benchmarks live here (not committed); override with TVR_DEMO_DATA."""
    return Path(os.environ.get("TVR_DEMO_DATA", _WORK_ROOT / "data"))


def default_dataset_dir() -> Path:
    """The bundled synthetic benchmark, generated on first use."""
    return data_dir() / "synthetic"


def cache_dir() -> Path:
    """Feature caches; override with TVR_DEMO_CACHE."""
    return Path(os.environ.get("TVR_DEMO_CACHE", _WORK_ROOT / "cache"))
