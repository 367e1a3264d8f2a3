"""The engine facade: a checkpoint on a gallery, encoded once, then queried many times (SAM's `SamPredictor`).

A request scores its query once (`score_text`, `score_video`: a `ScoreRow` over the whole gallery); search, explain
and the diagnosis views read it. The split's matrices (`engine.matrices`) and their analysis (`engine.analysis`)
serve the whole-benchmark views. The UI, the CLI and the tests all call this class; it returns numbers, never figures.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from tvr_demo.data import Benchmark, load_benchmark
from tvr_demo.data.folder import require_captions
from tvr_demo.errors import QueryError
from tvr_demo.evaluation.analysis import Analysis
from tvr_demo.models.checkpoints import Checkpoint, load_checkpoint
from tvr_demo.paths import cache_dir
from tvr_demo.retrieval.encoding import Encoding
from tvr_demo.retrieval.explanation import PairExplanation, explain_pair
from tvr_demo.retrieval.gallery import IN_MEMORY_MAX, Coverage, EncodedGallery, GalleryEncoder
from tvr_demo.retrieval.matrices import FusionTerms, ScoreMatrices
from tvr_demo.retrieval.queries import Query, clean_query
from tvr_demo.retrieval.ranking import ScoreRow, SearchResult
from tvr_demo.retrieval.scoring import default_device, encode_texts, encode_video_frames, rows_of
from tvr_demo.safety import public_name


@dataclass(frozen=True)
class Clip:
    """A video from outside the gallery, decoded into the frames the model takes."""

    name: str
    frames: torch.Tensor  # (V, 3, R, R) uint8, zero-padded
    mask: torch.Tensor  # (V,) int64


class Engine:
    """One checkpoint + one benchmark split; the gallery is encoded once (or read from the cache)."""

    # typed queries against larger galleries: faiss candidates + exact re-ranking (retrieval/index.py); the bench's
    # two-stage rows compare it with the exact scan at 10k and 100k videos
    two_stage_above: int = 50000

    def __init__(self, checkpoint: Checkpoint, bench: Benchmark, cache_root: Path | None = None,
                 progress: bool = True, encode_in_background: bool = False) -> None:
        """Encodes what the feature store lacks of the gallery first; with `encode_in_background` it returns at once
        and encodes in a thread, typed searches covering the clips encoded so far (`coverage`)."""
        self.checkpoint, self.bench = checkpoint, bench
        self.model, self.config = checkpoint.model, checkpoint.config
        self.gallery_size, self.num_captions = bench.num_videos, bench.num_captions
        encoder = GalleryEncoder(checkpoint, bench, Path(cache_root or cache_dir()), progress)
        self.gallery: EncodedGallery = encoder.gallery
        if self.gallery_size <= IN_MEMORY_MAX:
            _ = self.gallery.videos  # held in memory, where the whole-split views score it; larger: memory-mapped
        self.encoding = Encoding(encoder, in_background=encode_in_background, progress=progress)
        self.matrices = ScoreMatrices(self.gallery, checkpoint.config)
        if progress and not encode_in_background and self.skipped:  # a background encode finds them as it goes
            print(f"{len(self.skipped)} video(s) could not be decoded and are skipped:\n"
                  + "\n".join(f"  {path}: {reason}" for path, reason in self.skipped), file=sys.stderr)

    @classmethod
    def from_names(cls, checkpoint: str, dataset: str | Path | None = None, split: str = "test",
                   device: str | None = None, progress: bool = True) -> Engine:
        """A registry name (or checkpoint path) on a benchmark folder; None: the bundled benchmark, generated once."""
        if dataset is None:
            from tvr_demo.data.synthetic import ensure_default_dataset

            dataset = ensure_default_dataset(progress=progress, splits=(split,))
        return cls(load_checkpoint(checkpoint, default_device(device)), load_benchmark(Path(dataset), split),
                   progress=progress)

    @staticmethod
    def is_cached(checkpoint: Checkpoint, bench: Benchmark, cache_root: Path | None = None) -> bool:
        """Whether the feature store holds every clip of this gallery (an engine then builds in seconds)."""
        return GalleryEncoder(checkpoint, bench, Path(cache_root or cache_dir()), False, verify=False).missing == 0

    # ------------------------------------------------------------ what it holds

    @property
    def is_unify(self) -> bool:
        return self.config.unify is not None

    @property
    def branches(self) -> tuple[str, ...]:
        return self.matrices.branches

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(file, reason) of each video that could not be decoded, the file named by its path inside the gallery."""
        return self.bench.public_failures(self.gallery.failures)

    @property
    def cache_path(self) -> Path:
        return self.gallery.path

    @property
    def nbytes(self) -> int:
        """Bytes this engine holds: the encoded gallery and the score matrices computed so far."""
        return self.gallery.nbytes + self.matrices.nbytes

    @property
    def coverage(self) -> Coverage:
        """How many of the gallery's clips are encoded (all of them unless an encode runs in the background)."""
        return self.gallery.coverage

    def wait_encoded(self, report: Callable[[str, float], None] | None = None) -> None:
        """Block until the background encode is done, telling `report(message, fraction)` how it goes (clips/s
        and the time left) about once a second; re-raises its error."""
        self.encoding.wait(report)

    @cached_property
    def analysis(self) -> Analysis:
        """Metrics, outcomes, slices, correlation and pooled vectors over the split, from this engine's matrices."""
        return Analysis(self)

    # ------------------------------------------------------------ checks at the boundary

    def ranking_branch(self, branch: str | None) -> str:
        """The branch to rank by: the one asked for, else fused for UNIFY and latent for DRL."""
        branch = branch or ("fused" if self.is_unify else "latent")
        if branch not in self.branches:
            raise QueryError(f"branch {branch!r} is not available for this model (have: {', '.join(self.branches)})")
        return branch

    def check_video(self, index: int) -> int:
        if not 0 <= int(index) < self.gallery_size:
            raise QueryError(f"video index {index} is outside the gallery (0..{self.gallery_size - 1})")
        if not self.gallery.encoded[int(index)]:
            raise QueryError(f"video {index} is not encoded yet ({self.coverage.encoded:,} of {self.gallery_size:,} "
                             "clips are): try again when the encode has reached it")
        return int(index)

    @cached_property
    def _caption_lookup(self) -> dict[str, int]:
        lookup: dict[str, int] = {}
        for i, caption in enumerate(self.bench.captions):
            lookup.setdefault(caption.strip().lower(), i)
        return lookup

    def caption_index(self, text: str) -> int | None:
        """The benchmark caption equal to this text (case and surrounding spaces ignored), if any."""
        return self._caption_lookup.get((text or "").strip().lower())

    # ------------------------------------------------------------ one query's row

    def score_text(self, query: str | int, branch: str | None = None, mode: str | None = None) -> ScoreRow:
        """Every branch's scores of a text query over the gallery. A benchmark caption (by text or index) reads its
        row of the matrices and knows its ground truth; a typed query is encoded. mode "exact" scores every video,
        "two_stage" re-ranks the index's candidates exactly (the rest -inf), None picks two_stage for typed queries
        against galleries above `two_stage_above` videos."""
        branch = self.ranking_branch(branch)
        query = self._caption_or_query(query)
        if isinstance(query, Query) and self._use_two_stage(mode):
            text = encode_texts(self.model, [query.text])
            scores = {"latent": self.two_stage_index.row_scores(text)[0]}
            return ScoreRow(scores, branch, query=query.text, notice=query.notice, text=text)
        return self.score_texts([query], branch)[0]

    def score_texts(self, queries: Sequence[str | int | Query], branch: str | None = None) -> list[ScoreRow]:
        """score_text(q, mode="exact") for many queries, the typed ones encoded in one batch."""
        branch = self.ranking_branch(branch)
        known = [self._caption_or_query(q) for q in queries]
        typed = [q for q in known if isinstance(q, Query)]
        texts = encode_texts(self.model, [q.text for q in typed]) if typed else None
        partly = self.coverage.notice()  # before scoring: clips encoded meanwhile are not counted as searched
        scores = self.matrices.score(texts) if typed else {}
        rows, j = [], 0
        for q in known:
            if isinstance(q, Query):
                notice = "; ".join(n for n in (q.notice, partly) if n) or None
                rows.append(ScoreRow({b: m[j] for b, m in scores.items()}, branch, query=q.text, notice=notice,
                                     text=rows_of(texts, [j])))
                j += 1
            else:
                rows.append(ScoreRow({b: self.matrices[b][q] for b in self.branches}, branch,
                                     (int(self.bench.caption_video[q]),), self.bench.captions[q], caption=q))
        return rows

    def _caption_or_query(self, query: str | int | Query) -> int | Query:
        """A benchmark caption's index (given, or a text equal to a caption), else the cleaned typed query."""
        if isinstance(query, (int, np.integer)):
            if not 0 <= int(query) < self.num_captions:
                raise QueryError(f"caption index {query} is outside the benchmark (0..{self.num_captions - 1})")
            self._check_complete("a benchmark caption's ranking")
            return int(query)
        cleaned = query if isinstance(query, Query) else clean_query(query, self.config.max_words)
        caption = self.caption_index(cleaned.text) if self.gallery.complete else None  # meanwhile: a typed query
        return cleaned if caption is None else caption

    def _check_complete(self, what: str) -> None:
        if not self.gallery.complete:
            coverage = self.coverage
            raise QueryError(f"{what} needs the whole gallery, and {coverage.encoded:,} of {coverage.total:,} clips "
                             "are encoded so far: typed searches work meanwhile")

    def score_video(self, video: int | Clip | Path, branch: str | None = None) -> ScoreRow:
        """Every branch's scores of a video query over the captions: a gallery video (its column of the matrices,
        its captions the ground truth), a decoded clip or a video file (fused standardised over the captions)."""
        branch = self.ranking_branch(branch)  # before decoding a file: a wrong branch should not cost a decode
        require_captions(self.bench, "video → text search")
        if isinstance(video, (int, np.integer)):
            index = self.check_video(video)
            self._check_complete("a gallery video's ranking of the captions")
            scores = {b: self.matrices.direction(b, "v2t")[:, index] for b in self.branches}
            return ScoreRow(scores, branch, tuple(self.bench.captions_of(index)), items="captions")
        self._check_complete("a clip's ranking of the captions")
        clip = video if isinstance(video, Clip) else self.read_clip(Path(video))
        bank = encode_video_frames(self.model, clip.frames[None], clip.mask[None])
        return ScoreRow({b: m[:, 0] for b, m in self.matrices.score(self.gallery.texts, bank, 1).items()}, branch,
                        items="captions")

    def fusion(self, row: ScoreRow, item: int) -> FusionTerms:
        """How UNIFY's fused score of one item of a row is made from its latent and lexicon scores."""
        if not self.is_unify:
            raise QueryError("only UNIFY models fuse two scores")
        ok = self.gallery.decoded_ok if row.items == "videos" else None
        return self.matrices.fusion_terms(row.scores["latent"], row.scores["lexicon"], int(item), ok)

    def read_clip(self, path: Path, untrusted: bool = False) -> Clip:
        """A video file decoded as this model samples it; `untrusted` (an upload) decodes with the upload limits in
        a worker process that a malformed file can crash or hang without taking the server along."""
        from tvr_demo.data.video import load_untrusted_video, load_video

        load = load_untrusted_video if untrusted else load_video
        frames, mask = load(Path(path), self.config.sampling(), self.config.image_size)
        return Clip(public_name(Path(path).name), frames, mask)

    def score_similar(self, video: int | Clip | Path) -> ScoreRow:
        """Video -> video: the cosine of a clip's pooled vector (the mean of its frame features) with every gallery
        video's, branch "pooled"; it needs no captions. A gallery video (by index) and the videos that could not be
        decoded score -inf (never listed)."""
        self._check_complete("a search by a video")
        ok = self.gallery.decoded_ok
        pooled = self.gallery.videos.pooled.float()
        if isinstance(video, (int, np.integer)):
            index = self.check_video(video)
            if not ok[index]:
                raise QueryError(f"{self.bench.video_ids[index]} could not be decoded, so it has no features to "
                                 "search with")
            query = pooled[index]
        else:
            index = None
            clip = video if isinstance(video, Clip) else self.read_clip(Path(video))
            query = encode_video_frames(self.model, clip.frames[None], clip.mask[None]).pooled[0].float()
        scores = (pooled @ query.to(pooled.device)).cpu().numpy()
        scores[~ok] = -np.inf
        if index is not None:
            scores[index] = -np.inf
        return ScoreRow({"pooled": scores}, "pooled")

    def search_similar(self, video: int | Clip | Path, k: int = 10) -> SearchResult:
        """The k gallery videos closest to a clip (a gallery index, a decoded clip or a video file) by pooled
        cosine; the clip itself and undecodable videos are left out."""
        row = self.score_similar(video)
        return row.result(min(int(k), int(np.isfinite(row.ranking).sum())))

    # ------------------------------------------------------------ search and explain

    def search_text(self, text: str, k: int = 10, branch: str | None = None, mode: str | None = None
                    ) -> SearchResult:
        """The top k videos for a text, the ground truth's rank when it is a benchmark caption (see score_text)."""
        return self.score_text(text, branch, mode).result(k)

    def search_video(self, video: int | Clip | Path, k: int = 10, branch: str | None = None) -> SearchResult:
        """The top k captions for a gallery video (by index), a decoded clip or a video file."""
        return self.score_video(video, branch).result(k)

    def explain(self, query: str | int | ScoreRow, video_index: int) -> PairExplanation:
        """Why this video scored what it did for this query: the scorer's own pieces, per branch. Pass the query's
        row when the request has it, so the query is not scored again."""
        row = query if isinstance(query, ScoreRow) else self.score_text(query, mode="exact")
        video = self.check_video(video_index)
        text = row.text if row.text is not None else rows_of(self.gallery.texts, [row.caption])
        return explain_pair(text, self.gallery.rows(np.array([video])), row.query, video,
                            self.config.latent_interaction, self.is_unify,
                            {b: float(s[video]) for b, s in row.scores.items()})

    def evaluate(self, dsl: bool = False) -> dict:
        """The `tvr_demo evaluate` JSON; typed: `self.analysis.evaluate(dsl)`."""
        return self.analysis.evaluate(dsl).to_json()

    # ------------------------------------------------------------ large galleries

    @cached_property
    def two_stage_index(self):
        """retrieval.index.TwoStageIndex over the gallery's latent branch, built on first use: over the clips held in
        memory, or (a larger gallery) over the store's rows, re-ranked from its memory map, the index kept on disk
        beside the store so the next engine reads it back."""
        from tvr_demo.retrieval.index import TwoStageConfig, TwoStageIndex

        gallery, ok = self.gallery, self.gallery.decoded_ok
        if gallery.held:
            return TwoStageIndex(gallery.videos, self.config.latent_interaction, ok)
        config = TwoStageConfig()
        key = hashlib.sha256(gallery.locations[ok].tobytes() + repr(config).encode()).hexdigest()[:24]
        return TwoStageIndex(gallery.stored_rows(), self.config.latent_interaction, ok, config,
                             path=gallery.path / "index" / f"{key}.faiss", progress=True)

    def _use_two_stage(self, mode: str | None) -> bool:
        if mode not in (None, "exact", "two_stage"):
            raise QueryError(f"search mode {mode!r} is not one of: exact, two_stage")
        if mode == "two_stage" and self.is_unify:
            raise QueryError("two-stage search covers the latent score of DRL models only; use mode='exact'")
        if mode == "two_stage":
            self._check_complete("two-stage search")
        return mode == "two_stage" or (mode is None and not self.is_unify and self.gallery.complete
                                       and self.gallery_size > self.two_stage_above)
