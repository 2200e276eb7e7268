"""Vector storage and nearest-neighbour search over fingerprints.

Two layers:
- `VectorStore`: an append-only file of float32 rows, the source of truth. Appends are fsynced,
  and rows past the committed count (a crash mid-append) are cut off on open.
- `VectorIndex`: a faiss index built from those rows with a factory spec chosen by size: exact
  inner product for small libraries, IVF-PQ for large ones with exact re-scoring of candidates.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

FLAT_MAX_VECTORS = 250_000  # ≈ 35 h of audio: up to here exact search answers in a few ms
PQ_BYTES_PER_VECTOR = 64  # the seed's code size
NPROBE = 32  # IVF cells visited per query vector
RESCORE_FACTOR = 4  # IVF-PQ fetches this many times k candidates, then re-scores them exactly
INDEX_FILE = "faiss.index"
INDEX_META = "faiss.json"


def choose_spec(n_vectors: int, d: int) -> str:
    """The faiss factory spec for a library of n_vectors fingerprints of dimension d."""
    if n_vectors <= FLAT_MAX_VECTORS:
        return "Flat"
    n_list = 2 ** round(math.log2(4 * math.sqrt(n_vectors)))
    return f"IVF{n_list},PQ{min(PQ_BYTES_PER_VECTOR, d // 2)}"


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


class VectorStore:
    """Append-only float32 rows (n, d) in one file; `committed` rows are known-good."""

    def __init__(self, path: Path, d: int) -> None:
        self.path = Path(path)
        self.d = d
        self.path.touch(exist_ok=True)

    @property
    def row_bytes(self) -> int:
        return 4 * self.d

    def __len__(self) -> int:
        return self.path.stat().st_size // self.row_bytes

    def truncate(self, n_rows: int) -> None:
        """Drop rows past n_rows: the tail of an append that a crash interrupted. A file that
        is shorter stays as it is (never padded), so the loss shows as a damaged index."""
        if self.path.stat().st_size > n_rows * self.row_bytes:
            with open(self.path, "r+b") as f:
                f.truncate(n_rows * self.row_bytes)

    def append(self, rows: np.ndarray) -> int:
        """Append rows float32 (n, d) durably; returns the index of the first new row."""
        rows = np.ascontiguousarray(rows, np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.d:
            raise ValueError(f"expected rows of shape (n, {self.d}), got {rows.shape}")
        first = len(self)
        with open(self.path, "ab") as f:
            f.write(rows.tobytes())
            f.flush()
            os.fsync(f.fileno())
        return first

    def read(self) -> np.ndarray:
        """All rows as a read-only memory map, float32 (n, d)."""
        n = len(self)
        if n == 0:
            return np.zeros((0, self.d), np.float32)
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=(n, self.d))

    def rewrite(self, rows: np.ndarray) -> None:
        """Replace the whole file atomically (compaction after removals)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        np.ascontiguousarray(rows, np.float32).tofile(tmp)
        _fsync_replace(tmp, self.path)


@dataclass
class VectorIndex:
    """A faiss inner-product index over unit vectors (N, d), plus the vectors for re-scoring."""

    index: faiss.Index
    vectors: np.ndarray
    spec: str

    @property
    def d(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    @classmethod
    def build(cls, vectors: np.ndarray, spec: str | None = None, *, seed: int = 0) -> VectorIndex:
        """Index vectors float32 (N, d); spec None picks by size (see choose_spec)."""
        vectors = np.asarray(vectors, np.float32)
        d = vectors.shape[1]
        spec = spec or choose_spec(len(vectors), d)
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(_training_sample(vectors, seed))
        for start in range(0, len(vectors), 100_000):
            index.add(np.ascontiguousarray(vectors[start : start + 100_000]))
        _set_nprobe(index)
        return cls(index=index, vectors=vectors, spec=spec)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product for queries float32 (L, d) → (scores (L, k), ids (L, k) int64).

        Ids are rows of `vectors`; -1 pads where fewer than k rows exist. Approximate indexes
        fetch more candidates and re-score them on the stored vectors, as the seed does.
        """
        queries = np.ascontiguousarray(queries, np.float32)
        if self.spec == "Flat":
            return self.index.search(queries, k)
        _, ids = self.index.search(queries, k * RESCORE_FACTOR)
        exact = np.einsum("ld,lkd->lk", queries, self.vectors[np.maximum(ids, 0)])
        exact[ids < 0] = -np.inf
        order = np.argsort(-exact, axis=1)[:, :k]
        return np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1)

    def save(self, directory: Path) -> None:
        """Write the faiss index and its metadata atomically into directory.

        An exact index is not written: it is a plain copy of the vectors, rebuilt on load in
        milliseconds, and writing it would double the library's size on disk.
        """
        directory = Path(directory)
        if self.spec == "Flat":
            (directory / INDEX_FILE).unlink(missing_ok=True)
        else:
            tmp = directory / (INDEX_FILE + ".tmp")
            faiss.write_index(self.index, str(tmp))
            _fsync_replace(tmp, directory / INDEX_FILE)
        meta_tmp = directory / (INDEX_META + ".tmp")
        meta_tmp.write_text(json.dumps({"spec": self.spec, "n_vectors": len(self), "d": self.d}))
        _fsync_replace(meta_tmp, directory / INDEX_META)

    @classmethod
    def load(cls, directory: Path, vectors: np.ndarray) -> VectorIndex | None:
        """The saved index if it covers exactly these vectors; None if it is stale or missing."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / INDEX_META).read_text())
            if meta["n_vectors"] != len(vectors) or meta["d"] != vectors.shape[1]:
                return None
            if meta["spec"] == "Flat":
                return cls.build(vectors, "Flat")
            index = faiss.read_index(str(directory / INDEX_FILE))
        except (OSError, ValueError, KeyError, RuntimeError):
            return None
        _set_nprobe(index)
        return cls(index=index, vectors=vectors, spec=meta["spec"])


def _training_sample(vectors: np.ndarray, seed: int, max_rows: int = 200_000) -> np.ndarray:
    if len(vectors) <= max_rows:
        return np.ascontiguousarray(vectors)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), max_rows, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _set_nprobe(index: faiss.Index) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = NPROBE
