"""Vector storage and nearest-neighbour search over fingerprints.

Two layers:
- `VectorStore`: an append-only file of rows, the source of truth. Appends are fsynced, and rows
  past the committed count (a crash mid-append) are cut off on open. Rows are float32 for small
  libraries; a large library stores product-quantisation codes instead (`train_codec`: d/2 bytes
  a row, 1/8 of float32), decoded on access by `DecodedRows`.
- `VectorIndex`: a faiss index built from those rows with a factory spec chosen by size: exact
  inner product for small libraries; for large ones a 4-bit fast-scan IVF-PQ proposes candidates
  and the stored rows re-score them.
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


def train_codec(vectors: np.ndarray | DecodedRows, *, seed: int = 0) -> faiss.Index:
    """A product quantiser for stored rows: a learned rotation (OPQ), then d/2 sub-vectors of
    2 dimensions, 8 bits each. On 160 noisy queries against 100 h, plain PQ moved 3 answers away
    from exact search's (2 by one hop); with the rotation 1 moved, as with 8-bit scalar codes
    twice the size."""
    d = vectors.shape[1]
    # "np": no polysemous training, which only helps Hamming-distance filtering (unused here)
    # and takes minutes on a large library.
    codec = faiss.index_factory(d, f"OPQ{d // 2},PQ{d // 2}np", faiss.METRIC_INNER_PRODUCT)
    codec.train(_training_sample(vectors, seed))
    return codec


def save_codec(codec: faiss.Index, path: Path) -> None:
    """Write a trained codec atomically."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    faiss.write_index(codec, str(tmp))
    _fsync_replace(tmp, Path(path))


def load_codec(path: Path) -> faiss.Index:
    """A codec written by save_codec; OSError or RuntimeError if missing or damaged."""
    return faiss.read_index(str(path))


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


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


class VectorStore:
    """Append-only rows in one file: float32 (n, d), or codes (n, code_size) with a codec.

    `committed` rows are known-good; the library records how many.
    """

    def __init__(self, path: Path, d: int, codec: faiss.Index | None = None) -> None:
        self.path = Path(path)
        self.d = d
        self.codec = codec
        self.path.touch(exist_ok=True)

    @property
    def row_bytes(self) -> int:
        return self.codec.sa_code_size() if self.codec is not None else 4 * self.d

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
        return self.append_raw(self.codec.sa_encode(rows) if self.codec is not None else rows)

    def append_raw(self, raw: np.ndarray) -> int:
        """Append rows already in this store's form (see `raw`); returns the first new row."""
        first = len(self)
        with open(self.path, "ab") as f:
            f.write(np.ascontiguousarray(raw).tobytes())
            f.flush()
            os.fsync(f.fileno())
        return first

    def raw(self) -> np.ndarray:
        """The rows as stored, memory-mapped read-only: float32 (n, d) or uint8 codes."""
        n = len(self)
        if self.codec is None:
            shape, dtype = (n, self.d), np.float32
        else:
            shape, dtype = (n, self.row_bytes), np.uint8
        if n == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", shape=shape)

    def read(self) -> np.ndarray | DecodedRows:
        """All rows as float32 (n, d): the memory map itself, or decoded on access."""
        raw = self.raw()
        return raw if self.codec is None else DecodedRows(raw, self.codec)


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
        if not index.is_trained:
            ivf = faiss.try_extract_index_ivf(index)
            # k-means wants ≥ 39 points per cell (faiss warns below that)
            wanted = max(TRAINING_ROWS, 40 * ivf.nlist) if ivf is not None else TRAINING_ROWS
            index.train(_training_sample(vectors, seed, wanted))
        built = cls(index=index, vectors=vectors, spec=spec, trained_on=len(vectors))
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

        Ids are rows of `vectors`; -1 pads where fewer than k rows exist. Approximate indexes
        fetch more candidates and re-score them on the stored rows, as the seed does.
        """
        queries = np.ascontiguousarray(queries, np.float32)
        if self.spec == "Flat":
            return self.index.search(queries, k)
        _, ids = self.index.search(queries, k * RESCORE_FACTOR)
        exact = np.einsum("ld,lkd->lk", queries, self.vectors[np.maximum(ids, 0)])
        exact[ids < 0] = -np.inf
        order = np.argsort(-exact, axis=1)[:, :k]
        return np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1)

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
            tmp = directory / (INDEX_FILE + ".tmp")
            faiss.write_index(self.index, str(tmp))
            _fsync_replace(tmp, directory / INDEX_FILE)
        meta = {"spec": self.spec, "n_vectors": len(self), "d": self.d, "store": store,
                "trained_on": self.trained_on}  # fmt: skip
        meta_tmp = directory / (INDEX_META + ".tmp")
        meta_tmp.write_text(json.dumps(meta))
        _fsync_replace(meta_tmp, directory / INDEX_META)
        self.unsaved = False

    @classmethod
    def load(
        cls, directory: Path, vectors: np.ndarray | DecodedRows, store: str = ""
    ) -> VectorIndex | None:
        """The saved index, brought up to date with rows appended since; None if it must be
        rebuilt: missing, made from another store, or trained on under a quarter of the rows
        (its cells would be too few for the library's size)."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / INDEX_META).read_text())
            n, spec = meta["n_vectors"], meta["spec"]
            if meta["d"] != vectors.shape[1] or meta.get("store", "") != store or n > len(vectors):
                return None
            if spec == "Flat":
                if len(vectors) > FLAT_MAX_VECTORS:
                    return None
                exact = cls.build(vectors, "Flat")
                exact.unsaved = n != len(vectors)  # nothing of it is stored but the metadata
                return exact
            trained_on = meta.get("trained_on", n)
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


def _training_sample(
    vectors: np.ndarray | DecodedRows, seed: int, max_rows: int = TRAINING_ROWS
) -> np.ndarray:
    if len(vectors) <= max_rows:
        return np.ascontiguousarray(vectors[:], np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), max_rows, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _set_nprobe(index: faiss.Index) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = NPROBE
