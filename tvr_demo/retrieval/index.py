"""Two-stage text-to-video search for large galleries: a faiss first stage over the pooled video vectors, then the
exact token-wise score (WTI / TI) of the top candidates.

The first stage asks for the C videos whose L2-normalised pooled vector (VideoBank.pooled) is closest to the query's
weighted mean token, sum_t w_t t_t (the vector whose inner product with a clip's mean frame bounds t2v from below:
max_v s >= mean_v s); the second stage scores only those C with the fused scorer, which tests pin to
drl.wti_similarity. A gallery larger than RAM is re-ranked from the feature store's files: only the C candidates'
rows are read, a block at a time. bench/ measures recall@10 against the exact search and the latency (bench/README.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm import tqdm

from tvr_demo.kernels import wti_scores
from tvr_demo.models import drl
from tvr_demo.retrieval.scoring import TextBank, VideoBank
from tvr_demo.retrieval.split_scan import SplitScan
from tvr_demo.retrieval.store import StoreRows


@dataclass
class TwoStageConfig:
    candidates: int = 8000  # C re-ranked per query; bench/search_bench.py measures recall@10 vs exact for each C
    flat_max: int = 300_000  # exact first stage (IndexFlatIP) up to here; larger galleries scan 8-bit codes instead
    # (a quarter of the bytes, the same recall@10 at 1e6 clips: bench/store_bench.py). An IVF, which scans a part of
    # the gallery, reached 0.76 there: a query's best WTI clips spread over most of its lists.
    sample: int = 65536  # vectors the 8-bit ranges are trained on
    seed: int = 0


ADD_BLOCK = 65536  # pooled vectors read from the store and added to the index at a time
RERANK_BLOCK = 512  # candidates scored at a time: their float32 frames (12 MB for ViT-B/32) stay near the cache


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


class _BankRows:
    """An in-memory VideoBank seen as StoreRows is: pooled vectors and candidate rows by clip."""

    def __init__(self, videos: VideoBank) -> None:
        self.videos = videos

    def __len__(self) -> int:
        return self.videos.pooled.shape[0]

    def pooled(self, clips: np.ndarray) -> np.ndarray:
        return _numpy(self.videos.pooled[torch.as_tensor(clips, device=self.videos.pooled.device)])

    def frame_blocks(self, clips: np.ndarray, block: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(frames, mask, weights) of these clips, in one block: they are in memory already."""
        pick = torch.as_tensor(clips, device=self.videos.frames.device)
        yield self.videos.frames[pick], self.videos.mask[pick], self.videos.weights[pick]


class TwoStageIndex:
    """Build once per gallery (or read back from `path`), then `search` any number of encoded queries. The gallery
    is an in-memory VideoBank or a store's rows (StoreRows), re-ranked from the store's files."""

    def __init__(self, videos: VideoBank | StoreRows, interaction: str, valid: np.ndarray | None = None,
                 config: TwoStageConfig | None = None, path: Path | None = None, progress: bool = False) -> None:
        self.rows = videos if isinstance(videos, StoreRows) else _BankRows(videos)
        self.interaction = interaction
        self.config = config or TwoStageConfig()
        self.size = len(self.rows)
        self.ids = np.arange(self.size) if valid is None else np.flatnonzero(valid)  # index row -> gallery position
        if path is not None and Path(path).is_file():
            index = faiss.read_index(str(path))
        else:
            index = self._build(progress)
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(path).with_name(f"{Path(path).name}.{os.getpid()}.tmp")
                faiss.write_index(index, str(tmp))
                os.replace(tmp, path)
        self.kind = "flat" if isinstance(index, faiss.IndexFlat) else "sq8"
        threads = faiss.omp_get_max_threads()
        # the codes are moved into the parts, the whole index let go: resident memory holds them once
        self.index = SplitScan(index, threads) if self.kind == "sq8" and threads > 1 else index

    def _build(self, progress: bool) -> faiss.Index:
        """A flat inner-product index up to `flat_max` clips, else a scan of 8-bit codes (ranges trained on a
        sample), filled block by block: a store-backed gallery's pooled vectors are read in blocks, never at once."""
        blocks = [self.ids[s:s + ADD_BLOCK] for s in range(0, len(self.ids), ADD_BLOCK)]
        dim = self.rows.pooled(self.ids[:1]).shape[1]
        if len(self.ids) <= self.config.flat_max:
            index, mean = faiss.IndexFlatIP(dim), np.zeros(dim, np.float32)
        else:
            index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
            # centred: a query's ranking is unchanged (<q, x - m> = <q, x> - const), and the 8-bit ranges are spent
            # on what tells the clips apart, not on the direction every clip shares
            mean = sum(self.rows.pooled(b).sum(0, dtype=np.float64) for b in blocks) / len(self.ids)
            mean = mean.astype(np.float32)
            sample = np.random.default_rng(self.config.seed).permutation(len(self.ids))[:self.config.sample]
            index.train(self.rows.pooled(self.ids[np.sort(sample)]) - mean)
        for block in tqdm(blocks, desc="indexing pooled vectors", unit="block", file=sys.stderr,
                          disable=not progress or len(blocks) < 2):
            index.add(self.rows.pooled(block) - mean)
        return index

    def _text_weights(self, texts: TextBank) -> torch.Tensor:
        return drl.weights_for(self.interaction, texts.mask, texts.weights)

    def query_vectors(self, texts: TextBank) -> np.ndarray:
        """(A, D) first-stage queries: the EOT feature for dp, else the normalised weighted mean token."""
        if self.interaction == "dp":
            return _numpy(texts.pooled)
        weights = self._text_weights(texts).to(texts.tokens.dtype)
        return _numpy(drl.l2_normalize((texts.tokens * weights[..., None]).sum(1)))

    def candidates(self, texts: TextBank, count: int | None = None) -> list[np.ndarray]:
        """Per query, up to C gallery positions from the first stage (best first)."""
        count = min(count or self.config.candidates, len(self.ids))
        _, rows = self.index.search(self.query_vectors(texts), count)
        return [self.ids[r[r >= 0]] for r in rows]

    def rerank(self, texts: TextBank, candidates: list[np.ndarray]) -> list[torch.Tensor]:
        """Exact scores of each query's candidates (same numbers as the full scorer gives them)."""
        out = []
        t_w = self._text_weights(texts)
        device = texts.tokens.device
        for a, cand in enumerate(candidates):
            if self.interaction == "dp":
                pooled = torch.as_tensor(self.rows.pooled(cand), device=device)
                out.append(drl.dp_similarity(texts.pooled[a:a + 1], pooled)[0].float())
                continue
            scores = []
            for frames, mask, weights in self.rows.frame_blocks(cand, RERANK_BLOCK):
                frames, mask, weights = frames.to(device), mask.to(device), weights.to(device)
                scores.append(wti_scores(texts.tokens[a:a + 1], texts.mask[a:a + 1], t_w[a:a + 1], frames, mask,
                                         drl.weights_for(self.interaction, mask, weights))[0])
            out.append(torch.cat(scores) if scores else torch.zeros(0, device=device))
        return out

    def search(self, texts: TextBank, k: int = 10, candidates: int | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per query, the top-k gallery positions and their exact scores, best first."""
        cands = self.candidates(texts, max(k, candidates or self.config.candidates))
        ids, scores = [], []
        for cand, s in zip(cands, self.rerank(texts, cands), strict=True):
            s = s.cpu().numpy()
            order = np.argsort(-s, kind="stable")[:k]
            ids.append(cand[order])
            scores.append(s[order])
        return ids, scores

    def row_scores(self, texts: TextBank, k: int = 10) -> np.ndarray:
        """(A, n_videos) exact scores of each query's candidates and -inf elsewhere (never retrieved): a drop-in
        for a row of the full score matrix when only the top k matter."""
        cands = self.candidates(texts, max(k, self.config.candidates))
        out = np.full((len(cands), self.size), -np.inf, dtype=np.float32)
        for a, (cand, s) in enumerate(zip(cands, self.rerank(texts, cands), strict=True)):
            out[a, cand] = s.cpu().numpy()
        return out
