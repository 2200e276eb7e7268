"""Nearest-neighbour search over fingerprints: `VectorIndex`, a faiss index built from a
library's stored rows (engine.library.store) with a factory spec chosen by size: exact inner product
for small libraries; for large ones a 4-bit fast-scan IVF-PQ proposes candidates and the stored rows
re-score them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from engine.core.threads import search_threads

FLAT_MAX_VECTORS = 250_000  # ≈ 35 h of audio: up to here exact search answers in a few ms
# IVF cells visited per query vector: against 1,000 h, 32 changed 1.3 % of the answers of exact
# search (the right rows were in cells not visited), 128 none.
NPROBE = 128
RESCORE_FACTOR = 4  # IVF-PQ fetches this many times k candidates, then re-scores them on the rows
TRAINING_ROWS = 200_000  # rows sampled to train a codec or an index
ADD_CHUNK = 100_000  # rows decoded and added to an index at a time, to bound memory
INDEX_FILE = "faiss.index"
INDEX_META = "faiss.json"


def choose_spec(n_vectors: int, d: int) -> str:
    """The faiss factory spec for a library of n_vectors fingerprints of dimension d.

    Large libraries get an IVF with 4-bit fast-scan PQ codes of d/8 bytes: it only proposes
    candidates, which the stored rows then re-score, so its codes can be small and SIMD-fast.
    """
    if n_vectors <= FLAT_MAX_VECTORS:
        return "Flat"
    n_list = 2 ** round(math.log2(4 * math.sqrt(n_vectors)))
    return f"IVF{n_list},PQ{d // 4}x4fs"


class DecodedRows:
    """Rows stored as codes (N, code_size) uint8, read as float32 (N, d) by indexing.

    `rows[i]`, `rows[a:b]` and `rows[ids]` for int arrays of any shape decode just those rows,
    so searches touch a few thousand codes, never the whole library.
    """

    def __init__(self, codes: np.ndarray, codec: faiss.Index) -> None:
        self.codes = codes
        self.codec = codec

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.codes), self.codec.d)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, key: object) -> np.ndarray:
        codes = np.asarray(self.codes[key])
        flat = np.ascontiguousarray(codes.reshape(-1, codes.shape[-1]))
        return self.codec.sa_decode(flat).reshape(*codes.shape[:-1], self.codec.d)


@dataclass
class VectorIndex:
    """A faiss inner-product index over unit vectors (N, d), plus the rows for re-scoring.

    `trained_on` is how many rows the index was built from; rows added since then were
    assigned to its existing cells. `unsaved` says it differs from what is on disk.
    """

    index: faiss.Index
    vectors: np.ndarray | DecodedRows
    spec: str
    trained_on: int
    unsaved: bool = True

    @property
    def d(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    @classmethod
    def build(
        cls, vectors: np.ndarray | DecodedRows, spec: str | None = None, *, seed: int = 0
    ) -> VectorIndex:
        """Index vectors float32 (N, d); spec None picks by size (see choose_spec)."""
        d = vectors.shape[1]
        spec = spec or choose_spec(len(vectors), d)
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        built = cls(index=index, vectors=vectors, spec=spec, trained_on=len(vectors))
        if not index.is_trained:
            ivf = faiss.try_extract_index_ivf(index)
            # k-means wants ≥ 39 points per cell (faiss warns below that)
            wanted = max(TRAINING_ROWS, 40 * ivf.nlist) if ivf is not None else TRAINING_ROWS
            index.train(training_sample(vectors, seed, wanted))
        built._add_rows(0)
        _set_nprobe(index)
        return built

    def _add_rows(self, start: int) -> None:
        for first in range(start, len(self.vectors), ADD_CHUNK):
            rows = self.vectors[first : first + ADD_CHUNK]
            self.index.add(np.ascontiguousarray(rows, np.float32))
        self.unsaved = True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product for queries float32 (L, d) → (scores (L, k), ids (L, k) int64).

        Ids are rows of `vectors`; where fewer than k candidates exist (a small library, IVF
        cells with few rows) the id is -1 and the score -inf, so a missing neighbour always
        ranks last; callers take noise floors from real neighbours only (engine.query.search). A
        query row that is not finite gets no neighbours at all. Approximate indexes fetch more
        candidates and re-score them on the stored rows, as the seed does.
        """
        queries = np.ascontiguousarray(queries, np.float32)
        finite = np.isfinite(queries).all(axis=1)
        queries = np.where(finite[:, None], queries, 0.0).astype(np.float32)
        fetched = k if self.spec == "Flat" else k * RESCORE_FACTOR
        with search_threads():  # engine.core.threads: a busy machine would stall a parallel one
            scores, ids = self.index.search(queries, fetched)
        if self.spec != "Flat":
            scores = np.einsum("ld,lkd->lk", queries, self.vectors[np.maximum(ids, 0)])
        ids = np.where(finite[:, None] & np.isfinite(scores), ids, -1)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def save(self, directory: Path, store: str = "") -> None:
        """Write the faiss index and its metadata atomically into directory.

        `store` names the row file the index was built from, so a rewritten store makes it
        stale. An exact index is not written: it is a plain copy of the vectors, rebuilt on load
        in milliseconds, and writing it would double the library's size on disk.
        """
        directory = Path(directory)
        if self.spec == "Flat":
            (directory / INDEX_FILE).unlink(missing_ok=True)
        else:
            write_atomically(directory / INDEX_FILE, faiss.serialize_index(self.index).tobytes())
        meta = {"spec": self.spec, "n_vectors": len(self), "d": self.d, "store": store,
                "trained_on": self.trained_on}  # fmt: skip
        write_atomically(directory / INDEX_META, json.dumps(meta).encode())
        self.unsaved = False

    @classmethod
    def load(
        cls, directory: Path, vectors: np.ndarray | DecodedRows, store: str = ""
    ) -> VectorIndex | None:
        """The saved index, brought up to date with rows appended since; None if it must be
        rebuilt: missing, made from another store, or trained on under a quarter of the rows
        (its cells would be too few for the library's size)."""
        directory = Path(directory)
        meta = read_index_meta(directory)
        if meta is None:
            return None
        try:
            n, spec = meta["n_vectors"], meta["spec"]
            if meta["d"] != vectors.shape[1] or meta["store"] != store or n > len(vectors):
                return None
            if spec == "Flat":
                if len(vectors) > FLAT_MAX_VECTORS:
                    return None
                exact = cls.build(vectors, "Flat")
                exact.unsaved = n != len(vectors)  # nothing of it is stored but the metadata
                return exact
            trained_on = meta["trained_on"]
            if len(vectors) > 4 * trained_on:
                return None
            index = faiss.read_index(str(directory / INDEX_FILE))
        except (OSError, ValueError, KeyError, RuntimeError):
            return None
        if index.ntotal != n:
            return None
        _set_nprobe(index)
        loaded = cls(index, vectors, spec, trained_on=trained_on, unsaved=False)
        if n < len(vectors):
            loaded._add_rows(n)
        return loaded


def open_index(
    directory: Path, vectors: np.ndarray | DecodedRows, store: str, *, save: bool
) -> VectorIndex:
    """The saved index brought up to date (VectorIndex.load), else one built now; saved where
    `save`, at best effort: a library on a full disk still answers."""
    index = VectorIndex.load(directory, vectors, store) or VectorIndex.build(vectors)
    if index.unsaved and save:
        with contextlib.suppress(OSError):
            index.save(directory, store)
    return index


# The metadata's fields and their types; a file that differs (edited, another version's) is
# a stale index, rebuilt from the rows.
META_FIELDS = {"spec": str, "n_vectors": int, "d": int, "store": str, "trained_on": int}


def read_index_meta(directory: Path) -> dict | None:
    """The saved index's metadata, or None where it is missing, unreadable or not of the
    expected shape and types (never an exception: it is derived, and rebuilt)."""
    try:
        meta = json.loads((Path(directory) / INDEX_META).read_text())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(meta, dict):
        return None
    meta = {"store": "", **meta}  # indexes saved before the store was recorded
    meta.setdefault("trained_on", meta.get("n_vectors"))
    for key, kind in META_FIELDS.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            return None
    return meta


def write_atomically(final: Path, data: bytes) -> None:
    """Write data to final through a new temporary file beside it (fsynced, then renamed over
    final). The temporary is made afresh and never through a link: a link planted under its
    name in a library folder would have nfp write into another user's file."""
    tmp = final.with_name(final.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


def training_sample(
    vectors: np.ndarray | DecodedRows, seed: int, max_rows: int = TRAINING_ROWS
) -> np.ndarray:
    """At most max_rows rows float32 (n, d), a seeded sample in stored order."""
    if len(vectors) <= max_rows:
        return np.ascontiguousarray(vectors[:], np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), max_rows, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _set_nprobe(index: faiss.Index) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = NPROBE
