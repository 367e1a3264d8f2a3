"""tvr_demo: see inside text-video retrieval models (DRL and UNIFY).

The Python API is one call and the engine it returns:

    engine = tvr_demo.load("drl-wti")                  # a checkpoint on a gallery, encoded once and cached
    result = engine.search_text("a red circle moves to the left", k=5)
    why = engine.explain("a red circle moves to the left", result.hits[0].index)

The names below are the package's public API (the app's UI reaches the layers beneath only through them, as
`.importlinter` checks). They load on first use: `import tvr_demo` stays light for the command line.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvr_demo.data import Benchmark, load_benchmark
    from tvr_demo.data.folder import missing_captions
    from tvr_demo.data.synthetic import ensure_default_dataset
    from tvr_demo.data.video import UPLOAD_MAX_BYTES, FrameSampling, sample_video
    from tvr_demo.devices import default_device
    from tvr_demo.evaluation.token_weights import caption_weights
    from tvr_demo.kernels import ScoringPath, serving_path
    from tvr_demo.models import ModelConfig
    from tvr_demo.models.checkpoints import Checkpoint, list_checkpoints, load_checkpoint
    from tvr_demo.retrieval.engine import Clip, Engine
    from tvr_demo.retrieval.explanation import (
        LexiconExplanation,
        PairExplanation,
        PooledExplanation,
        TokenFrameExplanation,
    )
    from tvr_demo.retrieval.ranking import ScoreRow, SearchHit, SearchResult

__version__ = "0.1.0"

__all__ = [
    "load",
    "Engine", "Clip", "ScoreRow", "SearchHit", "SearchResult",
    "PairExplanation", "TokenFrameExplanation", "PooledExplanation", "LexiconExplanation",
    "ModelConfig", "Checkpoint", "load_checkpoint", "list_checkpoints",
    "Benchmark", "load_benchmark", "missing_captions", "ensure_default_dataset", "FrameSampling", "sample_video",
    "UPLOAD_MAX_BYTES",
    "default_device", "ScoringPath", "serving_path", "caption_weights",
]
_EXPORTS = {  # module -> the names of __all__ it defines, imported on first use
    "tvr_demo.retrieval.engine": ("Engine", "Clip"),
    "tvr_demo.retrieval.ranking": ("ScoreRow", "SearchHit", "SearchResult"),
    "tvr_demo.retrieval.explanation": ("PairExplanation", "TokenFrameExplanation", "PooledExplanation",
                                       "LexiconExplanation"),
    "tvr_demo.models": ("ModelConfig",),
    "tvr_demo.models.checkpoints": ("Checkpoint", "load_checkpoint", "list_checkpoints"),
    "tvr_demo.data": ("Benchmark", "load_benchmark"),
    "tvr_demo.data.folder": ("missing_captions",),
    "tvr_demo.data.synthetic": ("ensure_default_dataset",),
    "tvr_demo.data.video": ("FrameSampling", "sample_video", "UPLOAD_MAX_BYTES"),
    "tvr_demo.devices": ("default_device",),
    "tvr_demo.kernels": ("ScoringPath", "serving_path"),
    "tvr_demo.evaluation.token_weights": ("caption_weights",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'tvr_demo' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)


def load(checkpoint: str = "drl-wti", dataset: str | Path | None = None, split: str = "test",
         device: str | None = None, progress: bool = True) -> Engine:
    """A checkpoint (a registry name such as "drl-wti" or "unify", our checkpoint folder, or an official DRL
    `pytorch_model.bin`) on a gallery (a benchmark folder; None: the bundled synthetic benchmark, generated on first
    use), encoded once and cached. The returned `Engine` scores a query over the gallery (`score_text`,
    `score_video`), searches (`search_text`, `search_video`) and explains a pair (`explain`: the scorer's own pieces);
    `engine.analysis` analyses the whole split (`evaluate`, `outcomes`, `slice_metrics`, ... with typed results)."""
    from tvr_demo.retrieval.engine import Engine

    return Engine.from_names(checkpoint, dataset, split, device=device, progress=progress)
