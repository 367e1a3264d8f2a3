"""Two-stage text-to-video search for large galleries: a faiss first stage over the pooled video vectors, then the
exact token-wise score (WTI / TI) of the top candidates.

The first stage asks for the C videos whose L2-normalised pooled vector (VideoBank.pooled) is closest to the query's
weighted mean token, sum_t w_t t_t (the vector whose inner product with a clip's mean frame bounds t2v from below:
max_v s >= mean_v s); the second stage scores only those C with the fused scorer, which tests pin to
drl.wti_similarity. bench/ measures recall@10 against the exact search and the latency (bench/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch

from tvr_demo.kernels import wti_scores
from tvr_demo.models import drl
from tvr_demo.retrieval.scoring import TextBank, VideoBank


@dataclass
class TwoStageConfig:
    candidates: int = 8000  # C re-ranked per query; bench/search_bench.py measures recall@10 vs exact for each C
    flat_max: int = 300_000  # exact first stage (IndexFlatIP) up to here; an IVF's recall depends on nprobe and the
    # features (the full suite's forced-IVF rows measure it at 100k), so only larger galleries use it
    nprobe: int = 64  # IVF lists visited per query (of about sqrt(N) lists)
    kmeans_iterations: int = 10  # IVF training (coarse lists only)
    seed: int = 0


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


class TwoStageIndex:
    """Build once per gallery, then `search` any number of encoded queries."""

    def __init__(self, videos: VideoBank, interaction: str, valid: np.ndarray | None = None,
                 config: TwoStageConfig | None = None) -> None:
        self.videos, self.interaction = videos, interaction
        self.config = config or TwoStageConfig()
        n = videos.pooled.shape[0]
        self.ids = np.arange(n) if valid is None else np.flatnonzero(valid)  # index row -> gallery position
        vectors = _numpy(videos.pooled[torch.as_tensor(self.ids, device=videos.pooled.device)])
        dim = vectors.shape[1]
        if len(self.ids) <= self.config.flat_max:
            self.index = faiss.IndexFlatIP(dim)
        else:
            lists = int(np.sqrt(len(self.ids)))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.niter = self.config.kmeans_iterations
            self.index.cp.spherical = True
            self.index.cp.seed = self.config.seed
            sample = np.random.default_rng(self.config.seed).permutation(len(vectors))[:64 * lists]
            # centred: a query's ranking is unchanged (<q, x - m> = <q, x> - const), but the lists no longer all sit
            # on the direction every video shares, so a query picks them better (a higher IVF recall)
            vectors = vectors - vectors.mean(0)
            self.index.train(vectors[np.sort(sample)])
            self.index.nprobe = min(self.config.nprobe, lists)
        self.index.add(vectors)
        self.video_weights = drl.weights_for(interaction, videos.mask, videos.weights)

    @property
    def kind(self) -> str:
        return "flat" if isinstance(self.index, faiss.IndexFlat) else "ivf"

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
        for a, cand in enumerate(candidates):
            pick = torch.as_tensor(cand, device=self.videos.pooled.device)
            if self.interaction == "dp":
                out.append(drl.dp_similarity(texts.pooled[a:a + 1], self.videos.pooled[pick])[0].float())
                continue
            out.append(wti_scores(texts.tokens[a:a + 1], texts.mask[a:a + 1], t_w[a:a + 1],
                                  self.videos.frames[pick], self.videos.mask[pick], self.video_weights[pick])[0])
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
        out = np.full((len(cands), self.videos.pooled.shape[0]), -np.inf, dtype=np.float32)
        for a, (cand, s) in enumerate(zip(cands, self.rerank(texts, cands), strict=True)):
            out[a, cand] = s.cpu().numpy()
        return out
