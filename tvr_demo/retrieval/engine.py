"""The engine facade: encode a gallery once, then answer searches and explain a (query, video) pair.

The UI, the CLI and the tests all call this class; it returns numbers and arrays, never figures. Whole-split analysis
(metrics, outcomes, slices, correlation) is `engine.analysis` (tvr_demo/evaluation/analysis.py), over the matrices held here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from tvr_demo.data import Benchmark, load_benchmark
from tvr_demo.errors import QueryError, TVRError
from tvr_demo.evaluation import metrics
from tvr_demo.evaluation.analysis import Analysis
from tvr_demo.kernels import ScoringPath, serving_path
from tvr_demo.memory import nbytes
from tvr_demo.models.checkpoints import Checkpoint, list_checkpoints, load_checkpoint
from tvr_demo.models.unify import lexicon_similarity, topk_sparsify
from tvr_demo.paths import cache_dir
from tvr_demo.retrieval.explanation import PairExplanation, explain_pair
from tvr_demo.retrieval.gallery import EncodedGallery, encode_gallery, gallery_fingerprint
from tvr_demo.retrieval.scoring import (
    TextBank,
    VideoBank,
    default_device,
    encode_texts,
    encode_video_frames,
    fuse_scores,
    similarity_matrix,
)

BRANCHES = ("latent", "lexicon", "fused")
MAX_QUERY_CHARS = 1000


def _slice(bank, start: int, stop: int):
    """Rows start:stop of a bank, as views (a sparse lexicon stays sparse)."""
    return type(bank)(**{name: None if value is None else value[start:stop] for name, value in bank.__dict__.items()})


def _rows(bank, index):
    """A sub-bank of the given rows (sparse lexicons densified)."""
    out = {}
    for name, value in bank.__dict__.items():
        if value is None:
            out[name] = None
        elif scipy.sparse.issparse(value):
            out[name] = torch.from_numpy(value[np.asarray(index)].toarray())
        else:
            out[name] = value[index.to(value.device)]
    return type(bank)(**out)


@dataclass
class SearchHit:
    index: int  # video index (text -> video) or caption index (video -> text)
    rank: int  # 0-based
    score: float  # in the ranking branch
    scores: dict[str, float]  # every branch the model has
    is_ground_truth: bool


@dataclass
class SearchResult:
    hits: list[SearchHit]
    branch: str
    ground_truth: list[int]  # the query's ground-truth items when the query is a benchmark caption / gallery video
    ground_truth_rank: int | None  # best rank among them (even when outside the top k)
    notice: str | None = None  # e.g. the query was truncated


# ------------------------------------------------------------ what a server needs beside engines
# The UI's session builds engines through these, so that tvr_demo.ui imports no layer below the engine (.importlinter).


def registered_checkpoints() -> list[str]:
    """The names checkpoints/registry.json lists (what the app serves when no --checkpoint is given)."""
    return [entry["name"] for entry in list_checkpoints()]


def open_checkpoint(spec: str, device: str) -> Checkpoint:
    """A registered name or a checkpoint folder, loaded strictly onto the device."""
    return load_checkpoint(spec, device)


def open_benchmark(root: Path, split: str) -> Benchmark:
    """A benchmark folder's split: captions, video paths and (synthetic) attributes."""
    return load_benchmark(root, split)


def bundled_benchmark_dir(split: str) -> Path:
    """The bundled synthetic benchmark's folder, its split generated (with a progress bar) on first use."""
    from tvr_demo.data.synthetic import ensure_default_dataset

    return ensure_default_dataset(progress=True, splits=(split,))


def serving_device(device: str | None) -> str:
    """The device engines run on: the one asked for, else CUDA when present, else the CPU."""
    return str(default_device(device))


def scoring_path(device: str) -> ScoringPath:
    """The token-wise scoring path on this device, and why (on CUDA the Triton kernel is checked on first use)."""
    return serving_path(device)


def gallery_cached(checkpoint: Checkpoint, bench: Benchmark, cache_root: Path | None = None) -> bool:
    """Whether this checkpoint's encoding of this gallery is on disk (an engine then builds in a second, not minutes)."""
    return (Path(cache_root or cache_dir()) / "gallery" / gallery_fingerprint(checkpoint, bench)).is_dir()


class Engine:
    """One checkpoint + one benchmark split; the gallery is encoded once (or read from the cache)."""

    # typed queries against larger galleries: faiss candidates + exact re-ranking (tvr_demo/retrieval/index.py); the two-stage
    # rows of the benchmark (bench/README.md, from bench/results/*.json) compare it with the exact scan at 10k and 100k
    two_stage_above: int = 50000

    def __init__(self, checkpoint: Checkpoint, bench: Benchmark, cache_root: Path | None = None,
                 progress: bool = True) -> None:
        self.checkpoint = checkpoint
        self.bench = bench
        self.gallery: EncodedGallery = encode_gallery(checkpoint, bench, Path(cache_root or cache_dir()), progress)
        if bench.num_videos == 0:
            raise TVRError(f"the gallery {bench.root} ({bench.split}) has no videos")

    @classmethod
    def from_names(cls, checkpoint: str, dataset: str | Path | None = None, split: str = "test",
                   device: str | None = None, progress: bool = True) -> Engine:
        if dataset is None:
            from tvr_demo.data.synthetic import ensure_default_dataset

            dataset = ensure_default_dataset(progress=progress, splits=(split,))
        dataset = Path(dataset)
        return cls(load_checkpoint(checkpoint, default_device(device)), load_benchmark(dataset, split),
                   progress=progress)

    # ------------------------------------------------------------ properties

    @property
    def model(self):
        return self.checkpoint.model

    @property
    def config(self):
        return self.checkpoint.config

    @property
    def is_unify(self) -> bool:
        return self.config.unify is not None

    @property
    def branches(self) -> tuple[str, ...]:
        return BRANCHES if self.is_unify else ("latent",)

    @property
    def cache_path(self) -> Path:
        return self.gallery.path

    @property
    def gallery_size(self) -> int:
        return self.bench.num_videos

    @property
    def num_captions(self) -> int:
        return self.bench.num_captions

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.gallery.failures

    # ------------------------------------------------------------ full matrices

    def _fuse(self, latent: np.ndarray, lexicon: np.ndarray, ok: np.ndarray | None, query_axis: int = 0
              ) -> np.ndarray:
        """UNIFY's fused score over the decodable videos (the others -inf), standardised along the queries' gallery;
        in blocks of whole queries (rows for text queries, columns for video queries), so the only full-size
        allocation is the result."""
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

    def _raw_scores(self, texts: TextBank, videos: VideoBank) -> dict[str, np.ndarray]:
        """The scores the model computes itself (latent, and lexicon for UNIFY) for these texts x videos."""
        out = {"latent": similarity_matrix(texts, videos, self.config.latent_interaction).float().cpu().numpy()}
        if self.is_unify:
            out["lexicon"] = lexicon_similarity(texts.lexicon, videos.lexicon).float().cpu().numpy()
        return out

    @staticmethod
    def _mask_undecoded(scores: dict[str, np.ndarray], ok: np.ndarray | None) -> None:
        """Videos that failed to decode (ok False) score -inf: never retrieved."""
        if ok is not None and not ok.all():
            for m in scores.values():
                m[:, ~ok] = -np.inf

    def _branch_matrix(self, texts: TextBank, videos: VideoBank, ok: np.ndarray | None = None,
                       query_axis: int = 0) -> dict[str, np.ndarray]:
        """Every branch's scores for these texts x videos. Fused standardises over whole gallery rows (text queries)
        or columns (video queries)."""
        out = self._raw_scores(texts, videos)
        self._mask_undecoded(out, ok)
        if self.is_unify:
            out["fused"] = self._fuse(out["latent"], out["lexicon"], ok, query_axis)
        return out

    # Called with the bytes a full-split computation is about to hold, before it allocates them; the app's session
    # sets it to make room under its memory budget (or refuse). None: no budget (the CLI, tests).
    reserve: Callable[[int], None] | None = None

    def _reserve(self, n_matrices: int) -> None:
        if self.reserve is not None:
            self.reserve(n_matrices * self.num_captions * self.gallery_size * 4)  # float32 (captions, videos)

    @property
    def nbytes(self) -> int:
        """Bytes this engine holds: the encoded gallery and whatever score matrices it has computed so far."""
        held = nbytes(self.gallery.texts) + nbytes(self.gallery.videos)
        return held + sum(nbytes(self.__dict__[name]) for name in ("matrices", "v2t_fused") if name in self.__dict__)

    @cached_property
    def matrices(self) -> dict[str, np.ndarray]:
        """(n_captions, n_videos) float32 per branch over the whole split, computed once, in blocks of captions: a
        training split's matrices are hundreds of MB each, and no block-sized temporary grows with them."""
        self._reserve(len(self.branches))
        texts, videos, ok = self.gallery.texts, self.gallery.videos, self.gallery.decoded_ok
        raw = [b for b in self.branches if b != "fused"]
        out = {b: np.empty((self.num_captions, self.gallery_size), dtype=np.float32) for b in raw}
        step = metrics.rows_per_block(self.gallery_size)
        for start in range(0, self.num_captions, step):
            for branch, block in self._raw_scores(_slice(texts, start, start + step), videos).items():
                out[branch][start:start + step] = block
        self._mask_undecoded(out, ok)
        if self.is_unify:
            out["fused"] = self._fuse(out["latent"], out["lexicon"], ok)
        return out

    @cached_property
    def v2t_fused(self) -> np.ndarray:
        """Fused scores for video queries: each video's scores standardised over the captions (not over the videos,
        as the text-query matrix is)."""
        matrices = self.matrices
        self._reserve(1)
        return self._fuse(matrices["latent"], matrices["lexicon"], self.gallery.decoded_ok, query_axis=1)

    def direction_matrix(self, branch: str, direction: str) -> np.ndarray:
        """(n_captions, n_videos) scores that rank the given direction's queries."""
        if branch == "fused" and direction == "v2t":
            return self.v2t_fused
        return self.matrices[branch]

    def ranking_branch(self, branch: str | None) -> str:
        branch = branch or ("fused" if self.is_unify else "latent")
        if branch not in self.branches:
            raise QueryError(f"branch {branch!r} is not available for this model (have: {', '.join(self.branches)})")
        return branch

    # ------------------------------------------------------------ search

    def encode_query(self, text: str) -> tuple[TextBank, str | None]:
        text = (text or "").strip()
        if not text:
            raise QueryError("the query is empty: type a description of a video")
        notice = None
        if len(text) > MAX_QUERY_CHARS:
            text, notice = text[:MAX_QUERY_CHARS], f"query cut to its first {MAX_QUERY_CHARS} characters"
        from tvr_demo.models.backbone import get_tokenizer

        if get_tokenizer()([text], self.config.max_words).truncated[0]:
            notice = (f"query truncated to the model's {self.config.max_words - 2} tokens: the rest is not seen")
        bank = encode_texts(self.model, [text])
        if self.is_unify:
            bank.lexicon = topk_sparsify(bank.lexicon, self.config.unify.top_k)
        return bank, notice

    def caption_index(self, text: str) -> int | None:
        """The benchmark caption equal to this text (case and surrounding spaces ignored), if any."""
        key = (text or "").strip().lower()
        for i, c in enumerate(self.bench.captions):
            if c.strip().lower() == key:
                return i
        return None

    @cached_property
    def two_stage_index(self):
        """tvr_demo.retrieval.index.TwoStageIndex over the gallery's latent branch, built on first use."""
        from tvr_demo.retrieval.index import TwoStageIndex

        return TwoStageIndex(self.gallery.videos, self.config.latent_interaction, self.gallery.decoded_ok)

    def _use_two_stage(self, mode: str | None) -> bool:
        if mode not in (None, "exact", "two_stage"):
            raise QueryError(f"search mode {mode!r} is not one of: exact, two_stage")
        if mode == "two_stage" and self.is_unify:
            raise QueryError("two-stage search covers the latent score of DRL models only; use mode='exact'")
        return mode == "two_stage" or (mode is None and not self.is_unify
                                       and self.gallery_size > self.two_stage_above)

    def search_text(self, text: str, k: int = 10, branch: str | None = None, mode: str | None = None
                    ) -> SearchResult:
        """mode "exact" scores every video; "two_stage" re-ranks the index's candidates exactly; None picks
        two_stage for typed queries against galleries above `two_stage_above` videos."""
        branch = self.ranking_branch(branch)
        two_stage = self._use_two_stage(mode)
        query_index = self.caption_index(text)
        if query_index is not None:
            scores = {b: m[query_index] for b, m in self.matrices.items()}
            notice = None
        elif two_stage:
            bank, notice = self.encode_query(text)
            scores = {"latent": self.two_stage_index.row_scores(bank, k)[0]}
        else:
            bank, notice = self.encode_query(text)
            scores = {b: m[0] for b, m in self._branch_matrix(bank, self.gallery.videos,
                                                              self.gallery.decoded_ok).items()}
        gt = [] if query_index is None else [int(self.bench.caption_video[query_index])]
        return self._hits(scores, branch, k, gt, notice)

    def query_scores(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Every branch's (len(texts), n_videos) scores, each row as search_text(text, mode="exact") scores it
        (a benchmark caption from the matrices), with the other texts encoded in one batch: for analyses that
        search many queries at once."""
        texts = [(t or "").strip()[:MAX_QUERY_CHARS] for t in texts]
        if not all(texts):
            raise QueryError("the query is empty: type a description of a video")
        rows = [self.caption_index(t) for t in texts]
        typed = [i for i, r in enumerate(rows) if r is None]
        out = {b: np.empty((len(texts), self.gallery_size), dtype=m.dtype) for b, m in self.matrices.items()}
        if typed:
            bank = encode_texts(self.model, [texts[i] for i in typed])
            if self.is_unify:
                bank.lexicon = topk_sparsify(bank.lexicon, self.config.unify.top_k)
            for b, m in self._branch_matrix(bank, self.gallery.videos, self.gallery.decoded_ok).items():
                out[b][typed] = m
        known = [i for i, r in enumerate(rows) if r is not None]
        for b, m in self.matrices.items():
            out[b][known] = m[[rows[i] for i in known]]
        return out

    def search_video(self, video: int | Path, k: int = 10, branch: str | None = None) -> SearchResult:
        """Video to text: a gallery video index or a video file."""
        branch = self.ranking_branch(branch)  # before decoding a file: a wrong branch should not cost an encode
        if not isinstance(video, (int, np.integer)):
            return self.search_video_bank(self.encode_video_file(Path(video)), k, branch)
        if not 0 <= int(video) < self.gallery_size:
            raise QueryError(f"video index {video} is outside the gallery (0..{self.gallery_size - 1})")
        scores = {b: self.direction_matrix(b, "v2t")[:, int(video)] for b in self.matrices}
        return self._hits(scores, branch, k, self.bench.captions_of(int(video)), None)

    def search_video_bank(self, bank: VideoBank, k: int = 10, branch: str | None = None) -> SearchResult:
        """Video to text for one encoded video from outside the gallery; fused scores standardise over the captions."""
        branch = self.ranking_branch(branch)
        scores = {b: m[:, 0] for b, m in self._branch_matrix(self.gallery.texts, bank, query_axis=1).items()}
        return self._hits(scores, branch, k, [], None)

    def encode_frames(self, frames: torch.Tensor, mask: torch.Tensor) -> VideoBank:
        """One video's sampled frames (V, 3, R, R) uint8 and mask (V,) as a bank, sparsified as the gallery is."""
        bank = encode_video_frames(self.model, frames[None], mask[None])
        if self.is_unify:
            bank.lexicon = topk_sparsify(bank.lexicon, self.config.unify.top_k)
        return bank

    def encode_video_file(self, path: Path) -> VideoBank:
        from tvr_demo.data.video import load_video

        frames, mask = load_video(path, self.config.sampling(),
                                  self.config.image_size)
        return self.encode_frames(frames, mask)

    @staticmethod
    def _hits(scores: dict[str, np.ndarray], branch: str, k: int, gt: list[int], notice: str | None
              ) -> SearchResult:
        ranking = scores[branch]
        order = np.argsort(-ranking, kind="stable")[:k]
        gt_rank = None
        if gt:  # metrics.gt_ranks (pessimistic ties) of the best ground truth, the others taken out of the row
            best = max(gt, key=lambda g: ranking[g])
            rest = [g for g in gt if g != best]
            row = np.delete(ranking, rest)[None]
            gt_rank = int(metrics.gt_ranks(row, np.array([best - sum(g < best for g in rest)]))[0])
        hits = [SearchHit(int(i), r, float(ranking[i]), {b: float(s[i]) for b, s in scores.items()}, int(i) in gt)
                for r, i in enumerate(order)]
        return SearchResult(hits, branch, gt, gt_rank, notice)

    # ------------------------------------------------------------ whole-split analysis (tvr_demo/evaluation/analysis.py)

    @cached_property
    def analysis(self) -> Analysis:
        """Metrics, outcomes, slices, correlation and pooled vectors over the split, read from this engine's own
        matrices (so `nbytes` counts them and dropping the engine frees them)."""
        return Analysis(self)

    def evaluate(self, dsl: bool = False) -> dict:
        """The `tvr_demo evaluate` JSON (../shared/design/interfaces.md); typed: `self.analysis.evaluate(dsl)`."""
        return self.analysis.evaluate(dsl).to_json()

    # ------------------------------------------------------------ rows of the encoded gallery (explanations)

    def text_rows(self, index: list[int]) -> TextBank:
        return _rows(self.gallery.texts, torch.as_tensor(index))

    def video_rows(self, index: list[int]) -> VideoBank:
        return _rows(self.gallery.videos, torch.as_tensor(index))

    # ------------------------------------------------------------ explanations

    def explain(self, query: str | int, video_index: int) -> PairExplanation:
        """Why this video scored what it did for this query: the scorer's own pieces, per branch."""
        if not 0 <= int(video_index) < self.gallery_size:
            raise QueryError(f"video index {video_index} is outside the gallery (0..{self.gallery_size - 1})")
        if isinstance(query, str) and self.caption_index(query) is not None:
            query = self.caption_index(query)
        if isinstance(query, (int, np.integer)):
            text, caption = self.text_rows([int(query)]), self.bench.captions[int(query)]
            row = {b: m[int(query)] for b, m in self.matrices.items()}
        else:
            text, _ = self.encode_query(query)
            caption = query.strip()
            row = {b: m[0] for b, m in self._branch_matrix(text, self.gallery.videos, self.gallery.decoded_ok).items()}
        scores = {b: float(r[int(video_index)]) for b, r in row.items()}
        return explain_pair(text, self.video_rows([int(video_index)]), caption, int(video_index),
                            self.config.latent_interaction, self.is_unify, scores)
