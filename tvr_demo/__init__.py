"""tvr_demo: see inside text-video retrieval models (DRL and UNIFY).

The Python API is one call and the engine it returns (README, "In a notebook"):

    engine = tvr_demo.load("drl-wti")                  # a checkpoint on a gallery, encoded once and cached
    result = engine.search_text("a red circle moves to the left", k=5)
    why = engine.explain("a red circle moves to the left", result.hits[0].index)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvr_demo.retrieval.engine import Engine

__version__ = "0.1.0"
__all__ = ["load"]


def load(checkpoint: str = "drl-wti", dataset: str | Path | None = None, split: str = "test",
         device: str | None = None, progress: bool = True) -> Engine:
    """A checkpoint (a registry name such as "drl-wti" or "unify", our checkpoint folder, or an official DRL
    `pytorch_model.bin`) on a gallery (a benchmark folder; None: the bundled synthetic benchmark, generated on first
    use), encoded once and cached. The returned `tvr_demo.retrieval.engine.Engine` searches (`search_text`, `search_video`),
    explains a pair (`explain`: the scorer's own pieces) and evaluates (`evaluate`: the CLI's JSON); `engine.analysis`
    analyses the whole split (`evaluate`, `outcomes`, `slice_metrics`, ... with typed results)."""
    from tvr_demo.retrieval.engine import Engine

    return Engine.from_names(checkpoint, dataset, split, device=device, progress=progress)
