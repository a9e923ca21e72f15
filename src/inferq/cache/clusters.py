"""Spherical k-means for the L2 index's cells: plain numpy, run off the event loop.

The index (inferq.cache.index) searches a large partition by its cells: the vectors nearest
each centroid. Training sees a sample, as faiss's IVF does (64 points a centroid is plenty
for the centroids; the assignment of every vector is what must be complete).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]

_SAMPLE_PER_CELL = 64
_ITERATIONS = 10
_ASSIGN_CHUNK = 8192  # rows per matmul when assigning: bounds the scores matrix to ~10 MB


def cell_count(rows: int) -> int:
    """About √n cells of about √n rows: probing a few dozen scans a few percent."""
    return max(1, round(math.sqrt(rows)))


def train_centroids(vectors: Matrix, cells: int, seed: int = 0) -> Matrix:
    """`cells` unit centroids of the unit rows of `vectors` (cosine is the inner product)."""
    rng = np.random.default_rng(seed)
    n = len(vectors)
    sample = vectors[rng.choice(n, min(n, cells * _SAMPLE_PER_CELL), replace=False)]
    centroids = sample[rng.choice(len(sample), cells, replace=False)].copy()
    for _ in range(_ITERATIONS):
        assigned = nearest(sample, centroids)
        order = np.argsort(assigned, kind="stable")
        counts = np.bincount(assigned, minlength=cells)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        filled = counts > 0
        sums = np.add.reduceat(sample[order], starts[filled], axis=0)
        centroids[filled] = sums
        if not filled.all():  # an empty cell restarts at a random sample point
            empty = int((~filled).sum())
            centroids[~filled] = sample[rng.choice(len(sample), empty, replace=False)]
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids


def nearest(vectors: Matrix, centroids: Matrix) -> npt.NDArray[np.intp]:
    """The index of each row's nearest centroid, in chunks."""
    out = np.empty(len(vectors), dtype=np.intp)
    for start in range(0, len(vectors), _ASSIGN_CHUNK):
        block = vectors[start : start + _ASSIGN_CHUNK]
        out[start : start + len(block)] = np.argmax(block @ centroids.T, axis=1)
    return out
