"""A first stage over a flat scan of codes, cut into parts scanned at once: faiss scans the codes of one query on
one thread, so a single typed query over a large gallery would leave every other core idle."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np


class SplitScan:
    """An IndexScalarQuantizer's codes split into `parts` indexes of consecutive rows (sharing its trained ranges),
    searched in threads (faiss releases the GIL) and their top k merged: the same candidates as the whole index."""

    def __init__(self, index: faiss.IndexScalarQuantizer, parts: int) -> None:
        n, size = index.ntotal, index.code_size
        codes = faiss.rev_swig_ptr(index.codes.data(), n * size).reshape(n, size)  # a view: copied part by part
        bounds = np.linspace(0, n, parts + 1).round().astype(np.int64)
        self.starts, self.parts = bounds[:-1], []
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            part = faiss.IndexScalarQuantizer(index.d, index.sq.qtype, index.metric_type)
            part.sq, part.is_trained = index.sq, True
            part.add_sa_codes(np.ascontiguousarray(codes[start:stop]))
            self.parts.append(part)
        self.ntotal = n
        # one OpenMP thread under each part (a per-thread setting): the parts are the parallelism
        self._pool = ThreadPoolExecutor(parts, thread_name_prefix="first-stage",
                                        initializer=faiss.omp_set_num_threads, initargs=(1,))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(A, k) scores and row ids, best first, as faiss's search returns them (-1 past the last row)."""
        found = list(self._pool.map(lambda part: part.search(queries, k), self.parts))  # each padded to k as faiss pads
        scores = np.concatenate([s for s, _ in found], 1)
        ids = np.concatenate([np.where(r >= 0, r + start, -1) for start, (_, r) in zip(self.starts, found,
                                                                                         strict=True)], 1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: the earlier part's row first
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
