"""Every branch's scores of texts against videos: one query's row, or the whole split's matrices, computed once in
blocks, with UNIFY's fusion and the bytes the matrices take reserved before they are allocated."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

from tvr_demo.errors import QueryError
from tvr_demo.evaluation import metrics
from tvr_demo.evaluation.metrics import standardize_rows
from tvr_demo.memory import nbytes
from tvr_demo.models.unify import lexicon_similarity
from tvr_demo.retrieval.scoring import TextBank, VideoBank, fuse_scores, rows_of, similarity_matrix

if TYPE_CHECKING:
    from tvr_demo.models import ModelConfig
    from tvr_demo.retrieval.gallery import EncodedGallery

BRANCHES = ("latent", "lexicon", "fused")  # UNIFY's; a DRL model has the latent branch only
STORE_BLOCK = 16384  # clips read from the store's memory map at a time when the gallery is not held in memory


@dataclass(frozen=True)
class FusionTerms:
    """How one item's fused score is made: fused = z(latent) + lambda * z(lexicon), z over the query's gallery."""

    fusion_lambda: float
    latent: float
    lexicon: float
    z_latent: float
    z_lexicon: float
    fused: float


def branches_of(config: ModelConfig) -> tuple[str, ...]:
    return BRANCHES if config.unify is not None else ("latent",)


class ScoreMatrices(Mapping[str, np.ndarray]):
    """The split's (n_captions, n_videos) float32 scores per branch: `self[branch]` ranks text queries, and
    `direction(branch, "v2t")` video queries (UNIFY's fused score standardised over the captions, not the videos).

    Computed on first use, in blocks of captions: a training split's matrices are hundreds of MB each, and no
    block-sized temporary grows with them. `reserve`, when set (the app's memory budget), is told the bytes first.
    """

    def __init__(self, gallery: EncodedGallery, config: ModelConfig) -> None:
        self.gallery, self.config = gallery, config
        self.branches = branches_of(config)
        self.reserve: Callable[[int], None] | None = None

    # ------------------------------------------------------------ any texts x videos

    def score(self, texts: TextBank, videos: VideoBank | None = None, query_axis: int = 0) -> dict[str, np.ndarray]:
        """Every branch's (n_texts, n_videos) scores. Without `videos`, against the gallery, where videos that
        failed to decode score -inf (never retrieved). Fused standardises over whole rows for text queries
        (query_axis 0) or whole columns for video queries (1)."""
        ok = self.gallery.decoded_ok if videos is None else None
        if videos is None and not self.gallery.held:
            out = self._raw_from_store(texts, ok)
        else:
            out = self._raw(texts, self.gallery.videos if videos is None else videos)
        _mask_undecoded(out, ok)
        if "fused" in self.branches:
            out["fused"] = self._fuse(out["latent"], out["lexicon"], ok, query_axis)
        return out

    def _raw(self, texts: TextBank, videos: VideoBank) -> dict[str, np.ndarray]:
        """The scores the model computes itself: latent, and lexicon for UNIFY."""
        out = {"latent": similarity_matrix(texts, videos, self.config.latent_interaction).float().cpu().numpy()}
        if "lexicon" in self.branches:
            out["lexicon"] = lexicon_similarity(texts.lexicon, videos.lexicon).float().cpu().numpy()
        return out

    def _raw_from_store(self, texts: TextBank, ok: np.ndarray) -> dict[str, np.ndarray]:
        """`_raw` against a gallery not held in memory: block by block from the store's memory map, the clips
        without features left at -inf."""
        n_texts, clips = texts.tokens.shape[0], np.flatnonzero(ok)
        out = {b: np.full((n_texts, len(ok)), -np.inf, dtype=np.float32) for b in self.branches if b != "fused"}
        for start in range(0, len(clips), STORE_BLOCK):
            block = clips[start:start + STORE_BLOCK]
            for branch, scores in self._raw(texts, self.gallery.rows(block, torch.float16)).items():
                out[branch][:, block] = scores
        return out

    def _fuse(self, latent: np.ndarray, lexicon: np.ndarray, ok: np.ndarray | None, query_axis: int = 0
              ) -> np.ndarray:
        """UNIFY's fused score over the decodable videos (the others -inf), in blocks of whole queries (rows for
        text queries, columns for video queries), so the only full-size allocation is the result."""
        fused = np.full_like(latent, -np.inf, dtype=np.float32)
        keep = np.arange(latent.shape[1]) if ok is None else np.flatnonzero(ok)
        lam = self.config.unify.fusion_lambda
        if query_axis == 0:
            step = metrics.rows_per_block(len(keep))
            for start in range(0, latent.shape[0], step):
                rows = slice(start, start + step)
                fused[rows, keep] = fuse_scores(latent[rows][:, keep], lexicon[rows][:, keep], lam, 0)
        else:
            step = metrics.rows_per_block(latent.shape[0])
            for start in range(0, len(keep), step):
                cols = keep[start:start + step]
                fused[:, cols] = fuse_scores(latent[:, cols], lexicon[:, cols], lam, 1)
        return fused

    def fusion_terms(self, latent: np.ndarray, lexicon: np.ndarray, item: int, ok: np.ndarray | None = None
                     ) -> FusionTerms:
        """The pieces of one item's fused score in a query's row, standardised as `score` standardises them (over
        the decodable videos for a text query)."""
        keep = np.arange(len(latent)) if ok is None else np.flatnonzero(ok)
        at = int(np.searchsorted(keep, item))
        z_latent, z_lexicon = (float(standardize_rows(np.asarray(x)[keep][None])[0, at]) for x in (latent, lexicon))
        lam = self.config.unify.fusion_lambda
        return FusionTerms(lam, float(latent[item]), float(lexicon[item]), z_latent, z_lexicon,
                           float(fuse_scores(latent[keep][None], lexicon[keep][None], lam)[0, at]))

    # ------------------------------------------------------------ the whole split

    def _reserve(self, n_matrices: int) -> None:
        if self.reserve is not None:
            texts, videos = self.gallery.texts.tokens.shape[0], len(self.gallery.locations)
            self.reserve(n_matrices * texts * videos * 4)  # float32 (captions, videos)

    @cached_property
    def _text_queries(self) -> dict[str, np.ndarray]:
        if not self.gallery.complete:
            coverage = self.gallery.coverage
            raise QueryError(f"this view scores every caption against the whole gallery, and {coverage.encoded:,} of "
                             f"{coverage.total:,} clips are encoded so far: typed searches work meanwhile")
        self._reserve(len(self.branches))
        texts, videos = self.gallery.texts, self.gallery.videos
        n_captions, n_videos = texts.tokens.shape[0], videos.frames.shape[0]
        raw = [b for b in self.branches if b != "fused"]
        out = {b: np.empty((n_captions, n_videos), dtype=np.float32) for b in raw}
        step = metrics.rows_per_block(n_videos)
        for start in range(0, n_captions, step):
            for branch, block in self._raw(rows_of(texts, slice(start, start + step)), videos).items():
                out[branch][start:start + step] = block
        _mask_undecoded(out, self.gallery.decoded_ok)
        if "fused" in self.branches:
            out["fused"] = self._fuse(out["latent"], out["lexicon"], self.gallery.decoded_ok)
        return out

    @cached_property
    def _video_queries_fused(self) -> np.ndarray:
        text_queries = self._text_queries
        self._reserve(1)
        return self._fuse(text_queries["latent"], text_queries["lexicon"], self.gallery.decoded_ok, query_axis=1)

    def direction(self, branch: str, direction: str) -> np.ndarray:
        """(n_captions, n_videos) scores that rank the given direction's queries ("t2v" or "v2t")."""
        if branch == "fused" and direction == "v2t":
            return self._video_queries_fused
        return self._text_queries[branch]

    def compute(self) -> None:
        """Compute the text-query matrices now, so the first whole-split request does not wait for them."""
        _ = self._text_queries

    @property
    def nbytes(self) -> int:
        """Bytes of the matrices computed so far."""
        return sum(nbytes(self.__dict__[name]) for name in ("_text_queries", "_video_queries_fused")
                   if name in self.__dict__)

    def __getitem__(self, branch: str) -> np.ndarray:
        return self._text_queries[branch]

    def __iter__(self) -> Iterator[str]:
        return iter(self.branches)

    def __len__(self) -> int:
        return len(self.branches)


def _mask_undecoded(scores: dict[str, np.ndarray], ok: np.ndarray | None) -> None:
    """Videos that failed to decode (ok False) score -inf: never retrieved."""
    if ok is not None and not ok.all():
        for m in scores.values():
            m[:, ~ok] = -np.inf
