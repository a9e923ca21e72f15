"""The in-process L2 index: cosine search in numpy, partitioned by scope.

A partition holds the entries of one (tenant, model version, earlier-turns hash, params hash),
so a search never even sees another tenant's vectors. Up to `exact_max` entries a partition
is searched exactly. Past that an exact search costs milliseconds of the event loop (8.9 ms
at 100k on the AVX2 host, docs/benchmarks.md), so the partition is split into about √n
cells by spherical k-means (inferq.cache.clusters), trained in a thread, and a search scans
only the `probes` cells whose centroids are nearest the query. A near-duplicate sits next to
its query, hence almost always in one of those cells; the recall this costs is measured in
docs/benchmarks.md ("The L2 index past 20,000 entries"). A missed neighbour is a miss, never
a wrong answer: whatever is found must still pass the threshold and the guard.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from inferq.cache.clusters import Matrix, cell_count, nearest, train_centroids
from inferq.cache.embedder import DIMENSIONS, Vector

log = logging.getLogger(__name__)

PartitionKey = tuple[str, str, str, str]  # tenant, model, context hash, params hash


class IndexedEntry(NamedTuple):
    id: str
    answer_key: str
    expires_at: float
    prompt: str  # for the lexical guard (inferq.cache.guard)


# How a cell holds an entry: a plain tuple of strings and a float, which the garbage collector
# stops tracking once it has seen it. 100,000 entries as objects made every full collection
# of the API walk them: 60 ms in process, 120 ms in an API under load, about once a second
# (docs/benchmarks.md, "The L2 index out of the collector's way").
_Row = tuple[str, str, float, str]


@dataclass(frozen=True)
class Match:
    entry: IndexedEntry
    similarity: float


@dataclass
class _Cell:
    """Vectors searched exactly: a growing matrix, with tombstones for removed rows."""

    vectors: Matrix = field(default_factory=lambda: np.empty((16, DIMENSIONS), dtype=np.float32))
    entries: list[_Row] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    removed: int = 0

    @classmethod
    def of(cls, entries: list[_Row], vectors: Matrix) -> _Cell:
        held = np.empty((max(16, 2 * len(entries)), DIMENSIONS), dtype=np.float32)
        held[: len(entries)] = vectors
        return cls(held, entries, {e[0]: i for i, e in enumerate(entries)})

    def add(self, entry: IndexedEntry, vector: Vector) -> None:
        n = len(self.entries)
        if n == len(self.vectors):  # grow by doubling: amortized O(1) appends
            grown = np.empty((2 * n, DIMENSIONS), dtype=np.float32)
            grown[:n] = self.vectors
            self.vectors = grown
        self.vectors[n] = vector
        self.entries.append((entry.id, entry.answer_key, entry.expires_at, entry.prompt))
        self.positions[entry.id] = n

    def best(self, query: Vector, now: float) -> Match | None:
        n = len(self.entries)
        if n == 0:
            return None
        scores = self.vectors[:n] @ query
        for _ in range(4):  # an expired best falls back to the next; expiry is rare
            i = int(np.argmax(scores))
            row = self.entries[i]
            if row[2] > now:
                return Match(IndexedEntry._make(row), float(scores[i]))
            scores[i] = -2.0
        return None

    def remove(self, entry_id: str) -> None:
        """Tombstone (expire) the entry; compact once half the rows are dead."""
        i = self.positions.pop(entry_id)
        _, answer_key, _, prompt = self.entries[i]
        self.entries[i] = ("", answer_key, 0.0, prompt)
        self.removed += 1
        if self.removed * 2 > len(self.entries):
            entries, vectors = self.live_rows()
            compacted = _Cell.of(entries, vectors)
            self.vectors, self.entries, self.positions = (
                compacted.vectors,
                compacted.entries,
                compacted.positions,
            )
            self.removed = 0

    def live_rows(self) -> tuple[list[_Row], Matrix]:
        return _live(self.entries, self.vectors)


def _live(entries: list[_Row], vectors: Matrix) -> tuple[list[_Row], Matrix]:
    """The rows that are not tombstones."""
    rows = [i for i, e in enumerate(entries) if e[0]]
    return [entries[i] for i in rows], vectors[rows]


@dataclass(frozen=True)
class _Cells:
    """A partition's trained layout: built off the event loop, swapped in on it."""

    centroids: Matrix
    cells: list[_Cell]
    where: dict[str, int]


# What a training reads in its thread, cell by cell: a copy of the entries list and a view of
# the rows. A row once written never changes (adds write past it; growth and compaction
# allocate new arrays), so the view is safe while the loop goes on.
_Snapshot = list[tuple[list[_Row], Matrix]]


def _build_cells(snapshot: _Snapshot) -> _Cells:
    live = [_live(cell_entries, cell_vectors) for cell_entries, cell_vectors in snapshot]
    entries = [entry for cell_entries, _ in live for entry in cell_entries]
    vectors = np.concatenate([cell_vectors for _, cell_vectors in live])
    centroids = train_centroids(vectors, cell_count(len(vectors)))
    assigned = nearest(vectors, centroids)
    order = np.argsort(assigned, kind="stable")
    bounds = np.cumsum(np.bincount(assigned, minlength=len(centroids)))[:-1]
    cells: list[_Cell] = []
    where: dict[str, int] = {}
    for c, members in enumerate(np.split(order, bounds)):
        cells.append(_Cell.of([entries[i] for i in members], vectors[members]))
        where.update((entries[i][0], c) for i in members)
    return _Cells(centroids, cells, where)


# What happened to a partition while its cells were being trained: an add or a removed id.
_Change = tuple[IndexedEntry, Vector] | str


class _Partition:
    """One scope's entries: a single cell searched exactly, or, past `exact_max` entries,
    cells probed nearest-centroid first (an inverted file, as faiss's IVF)."""

    def __init__(self) -> None:
        self.cells = [_Cell()]
        self.centroids: Matrix | None = None
        self.where: dict[str, int] = {}
        self.trained_rows = 0
        self.journal: list[_Change] | None = None  # a list while a training runs

    @property
    def live(self) -> int:
        return len(self.where)

    def add(self, entry: IndexedEntry, vector: Vector) -> None:
        cell = 0 if self.centroids is None else int(np.argmax(self.centroids @ vector))
        self.cells[cell].add(entry, vector)
        self.where[entry.id] = cell
        if self.journal is not None:
            self.journal.append((entry, vector))

    def remove(self, entry_id: str) -> None:
        self.cells[self.where.pop(entry_id)].remove(entry_id)
        if self.journal is not None:
            self.journal.append(entry_id)

    def best(self, query: Vector, now: float, probes: int) -> Match | None:
        if self.centroids is None:
            return self.cells[0].best(query, now)
        scores = self.centroids @ query
        probes = min(probes, len(scores))
        best: Match | None = None
        for c in np.argpartition(scores, -probes)[-probes:]:
            match = self.cells[c].best(query, now)
            if match is not None and (best is None or match.similarity > best.similarity):
                best = match
        return best

    def needs_training(self, exact_max: int) -> bool:
        """Past `exact_max`, and again each time it doubles (√n cells follow the size)."""
        return self.journal is None and self.live > max(exact_max, 2 * self.trained_rows)

    def snapshot(self) -> _Snapshot:
        """What a training reads; changes from now on are journaled for the swap."""
        self.journal = []
        return [(list(cell.entries), cell.vectors[: len(cell.entries)]) for cell in self.cells]

    def swap(self, trained: _Cells | None) -> None:
        """Take the trained cells and replay the journal onto them. A bulk load that
        outgrew the snapshot keeps the old layout, to be trained again on what is here now."""
        journal, self.journal = self.journal or [], None
        if trained is None:  # the training failed: try again once the partition has doubled
            self.trained_rows = self.live
            return
        if len(journal) > len(trained.where):
            return
        self.centroids, self.cells, self.where = trained.centroids, trained.cells, trained.where
        self.trained_rows = len(trained.where)
        for change in journal:
            if isinstance(change, str):
                if change in self.where:
                    self.remove(change)
            elif change[0].id not in self.where:
                self.add(*change)


class SemanticIndex:
    """Entries by partition. Every call runs on the event loop, so no lock is needed; only a
    training runs in a thread, on a copy, and its result is swapped in on the loop."""

    def __init__(self, exact_max: int = 20_000, probes: int = 16) -> None:
        self._partitions: dict[PartitionKey, _Partition] = {}
        self._ids: dict[str, PartitionKey] = {}
        self._exact_max = exact_max
        self.probes = probes
        self._training: set[asyncio.Future[_Cells]] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._ids

    def has(self, key: PartitionKey) -> bool:
        """True when the partition holds a live entry (else a search cannot match)."""
        partition = self._partitions.get(key)
        return partition is not None and partition.live > 0

    def add(self, key: PartitionKey, entry: IndexedEntry, vector: Vector) -> bool:
        if entry.id in self._ids:
            return False
        partition = self._partitions.setdefault(key, _Partition())
        partition.add(entry, vector)
        self._ids[entry.id] = key
        if partition.needs_training(self._exact_max):
            self._train(key, partition)
        return True

    def search(
        self, key: PartitionKey, query: Vector, threshold: float, now: float | None = None
    ) -> Match | None:
        """The nearest live entry of this partition if its cosine reaches `threshold`."""
        partition = self._partitions.get(key)
        if partition is None:
            return None
        match = partition.best(query, time.time() if now is None else now, self.probes)
        return match if match is not None and match.similarity >= threshold else None

    @property
    def training(self) -> int:
        """Trainings in flight."""
        return len(self._training)

    def is_probed(self, key: PartitionKey) -> bool:
        """True when the partition is searched by its cells rather than exactly."""
        partition = self._partitions.get(key)
        return partition is not None and partition.centroids is not None

    async def settle(self) -> None:
        """Wait for the trainings in flight (and any they start) to be swapped in."""
        while self._training:
            await asyncio.gather(*self._training, return_exceptions=True)
            await asyncio.sleep(0)  # let the done callbacks swap

    def _train(self, key: PartitionKey, partition: _Partition) -> None:
        snapshot = partition.snapshot()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a unit test): train here
            partition.swap(_build_cells(snapshot))
            return
        future = loop.run_in_executor(None, _build_cells, snapshot)
        self._training.add(future)
        future.add_done_callback(functools.partial(self._trained, key, partition))
        log.info("semantic index training a partition", extra={"entries": partition.live})

    def _trained(
        self, key: PartitionKey, partition: _Partition, future: asyncio.Future[_Cells]
    ) -> None:
        self._training.discard(future)
        trained = None
        if not future.cancelled():
            if (error := future.exception()) is not None:
                log.error("semantic index training failed", exc_info=error)
            else:
                trained = future.result()
        partition.swap(trained)
        if self._partitions.get(key) is partition and partition.needs_training(self._exact_max):
            self._train(key, partition)

    def remove(self, entry_id: str) -> None:
        key = self._ids.pop(entry_id, None)
        if key is not None:
            self._partitions[key].remove(entry_id)

    def purge(self, tenant: str | None, model: str | None) -> int:
        """Drop the partitions of a tenant, a model, or both; returns the entries dropped."""
        doomed = [
            key
            for key in self._partitions
            if (tenant is None or key[0] == tenant) and (model is None or key[1] == model)
        ]
        dropped = 0
        for key in doomed:
            for entry_id in self._partitions.pop(key).where:
                self._ids.pop(entry_id, None)
                dropped += 1
        return dropped

    def count(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self._ids)
        return sum(p.live for k, p in self._partitions.items() if k[0] == tenant)
