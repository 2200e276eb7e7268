"""The files of a library directory and the rules that keep them right; nothing else writes them.

Layout of a library directory:
    tracks.sqlite      tracks and records (engine.library.tracks): which checkpoint made the
                       rows, how many rows are committed, which generation of row files is
                       current
    vectors-N.f32      append-only fingerprints, generation N (a new one after compaction)
    vectors-N.pq       the same as product-quantisation codes once the library outgrows exact
    codec-N.faiss      search (FLAT_MAX_VECTORS), with the codec that reads them
    faiss.index/json   the search index, derived from the rows; extended or rebuilt when stale
    write.lock         flock'ed while a writer may append

Invariants:
- Rows are appended and fsynced before the track that owns them is committed; rows past the
  committed count are a crash's leftovers, ignored by readers and cut off by the next writer.
- Every track records a checksum of its rows (`integrity.rows_digest`), so damage is found and
  repaired by re-fingerprinting just the damaged tracks.
- Non-finite rows never enter a store (`VectorStore.encode` refuses them).
- Only files named as nfp names them (`is_own_file`) are ever removed; readers write nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from engine.core.errors import LibraryBusyError, NfpError, NonFiniteError
from engine.library.index import (
    INDEX_FILE,
    INDEX_META,
    DecodedRows,
    training_sample,
    write_atomically,
)
from engine.library.tracks import DB_FILE

LOCK_FILE = "write.lock"  # held while indexing, so no other opener cuts off rows in flight
REBUILD_DB = "tracks.rebuild.sqlite"  # a rebuild's track database until it is swapped in
ROW_FILE = re.compile(r"(?:vectors-(\d+)\.(?:f32|pq)|codec-(\d+)\.faiss)(?:\.tmp)?")
OWN_FILES = frozenset(
    name + suffix
    for name in (DB_FILE, REBUILD_DB, INDEX_FILE, INDEX_META)
    for suffix in ("", "-journal", ".tmp")
) | {LOCK_FILE}


def _open_no_follow(path: Path, flags: int):
    """A binary file object on path, refused (OSError ELOOP) where path is a symbolic link."""
    fd = os.open(path, flags | os.O_NOFOLLOW, 0o666)
    mode = "r+b" if flags & os.O_RDWR else "ab" if flags & os.O_APPEND else "wb"
    return os.fdopen(fd, mode)


def is_own_file(name: str) -> bool:
    """Whether a file name is one that nfp makes in a library directory."""
    return name in OWN_FILES or ROW_FILE.fullmatch(name) is not None


def remove_library(db_dir: Path) -> None:
    """Delete a library's files (tracks, fingerprints, search index), nothing else."""
    if Path(db_dir).is_dir():
        for path in Path(db_dir).iterdir():
            if is_own_file(path.name) and path.is_file():
                path.unlink()


class LibraryFiles:
    """A library directory. A writer creates it and may take the write lock; a reader only
    reads, so a library on a read-only disk or in a folder it may not write still answers."""

    def __init__(self, db_dir: Path, *, writable: bool) -> None:
        self.db_dir = Path(db_dir)
        self.writable = writable
        self._lock_file = None
        self._lock_depth = 0  # writing() nests: a rebuild holds the lock while its library updates
        if writable:
            try:
                self.db_dir.mkdir(parents=True, exist_ok=True)
                self._refuse_a_foreign_folder()
                self._refuse_links()
                append = os.O_WRONLY | os.O_CREAT | os.O_APPEND
                self._lock_file = _open_no_follow(self.db_dir / LOCK_FILE, append)
            except OSError as e:
                raise NfpError(f"{self.db_dir}: cannot use as a library folder "
                               f"({e.strerror or e})") from e  # fmt: skip

    def _refuse_a_foreign_folder(self) -> None:
        """A new library is made only in an empty folder: `--db /` or `--db ~/Music` would
        scatter nfp's files among the user's (and a later clean-up could meet theirs)."""
        if (self.db_dir / DB_FILE).exists():
            return
        foreign = self.foreign_files()
        if foreign:
            raise NfpError(f"{self.db_dir}: not a library folder: it holds files nfp did not "
                           f"make ({', '.join(foreign[:3])}); choose a new or empty folder for "
                           "the library")  # fmt: skip

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Exclusive, across processes, for as long as rows may be appended."""
        if self._lock_file is None:
            raise NfpError(f"{self.db_dir}: opened read-only")
        if not self._lock_depth:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise LibraryBusyError(self.db_dir) from e
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if not self._lock_depth:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def _refuse_links(self) -> None:
        """A writer never writes through a link under one of its own names (a vectors file
        linked to another user's file would be cut short and overwritten by a root `nfp
        index`); the row files are also opened with O_NOFOLLOW, for links planted later."""
        links = [p for p in self.db_dir.iterdir() if is_own_file(p.name) and p.is_symlink()]
        if links:
            raise NfpError(
                f"{links[0]}: is a symbolic link; nfp never writes through a link in a library "
                "folder (remove it, or rebuild the library elsewhere)"
            )

    def rows_path(self, generation: int, compressed: bool) -> Path:
        return self.db_dir / f"vectors-{generation}.{'pq' if compressed else 'f32'}"

    def codec_path(self, generation: int) -> Path:
        return self.db_dir / f"codec-{generation}.faiss"

    def store(self, generation: int, d: int, compressed: bool) -> VectorStore:
        """A generation's rows, with the codec that reads them if compressed."""
        if not compressed:
            return VectorStore(self.rows_path(generation, False), d)
        codec_path = self.codec_path(generation)
        try:
            codec = faiss.read_index(str(codec_path))
        except (OSError, RuntimeError) as e:
            raise NfpError(f"{codec_path}: unreadable codec ({e})") from e
        return VectorStore(self.rows_path(generation, True), d, codec)

    def new_store(self, generation: int, d: int, codec: faiss.Index | None) -> VectorStore:
        """An empty store for a new generation (its codec written first, atomically)."""
        if codec is not None:
            write_atomically(self.codec_path(generation), faiss.serialize_index(codec).tobytes())
        store = VectorStore(self.rows_path(generation, codec is not None), d, codec)
        store.path.unlink(missing_ok=True)  # a crashed attempt's leftover rows
        return store

    def row_files(self) -> dict[Path, int]:
        """nfp's row and codec files here (temporary ones included), with their generation."""
        found = {}
        for path in self.db_dir.iterdir():
            match = ROW_FILE.fullmatch(path.name)
            if match:
                found[path] = int(match.group(1) or match.group(2))
        return found

    def next_generation(self) -> int:
        return max(self.row_files().values(), default=-1) + 1

    def remove_generations(self, keep: int | None, among: range | None = None) -> None:
        """Remove the row and codec files of every generation but `keep` (of those `among`, if
        given); nothing else."""
        for path, generation in self.row_files().items():
            if generation != keep and (among is None or generation in among):
                path.unlink(missing_ok=True)

    def foreign_files(self) -> list[str]:
        """Names of entries here that nfp did not make (refused for a rebuild)."""
        return sorted(p.name for p in self.db_dir.iterdir() if not is_own_file(p.name))

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.db_dir.iterdir()
                   if is_own_file(p.name) and p.is_file())  # fmt: skip


def train_codec(vectors: np.ndarray | DecodedRows, *, seed: int = 0) -> faiss.Index:
    """A product quantiser for stored rows: a learned rotation (OPQ), then d/2 sub-vectors of
    2 dimensions, 8 bits each. On 160 noisy queries against 100 h, plain PQ moved 3 answers away
    from exact search's (2 by one hop); with the rotation 1 moved, as with 8-bit scalar codes
    twice the size."""
    d = vectors.shape[1]
    # "np": no polysemous training, which only helps Hamming-distance filtering (unused here)
    # and takes minutes on a large library.
    codec = faiss.index_factory(d, f"OPQ{d // 2},PQ{d // 2}np", faiss.METRIC_INNER_PRODUCT)
    codec.train(training_sample(vectors, seed))
    return codec


class VectorStore:
    """Append-only rows in one file: float32 (n, d), or codes (n, code_size) with a codec.

    Opening one writes nothing; the file appears with the first append.
    """

    def __init__(self, path: Path, d: int, codec: faiss.Index | None = None) -> None:
        self.path = Path(path)
        self.d = d
        self.codec = codec

    @property
    def row_bytes(self) -> int:
        return self.codec.sa_code_size() if self.codec is not None else 4 * self.d

    def __len__(self) -> int:
        try:
            return self.path.stat().st_size // self.row_bytes
        except FileNotFoundError:
            return 0

    def truncate(self, n_rows: int) -> None:
        """Drop rows past n_rows: the tail of an append that a crash interrupted. A file that
        is shorter stays as it is (never padded), so the loss shows as a damaged library."""
        if len(self) > n_rows:
            with _open_no_follow(self.path, os.O_RDWR) as f:
                f.truncate(n_rows * self.row_bytes)

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """Fingerprints float32 (n, d) in this store's form; NonFiniteError for NaN or inf rows,
        which would otherwise win every search they enter."""
        rows = np.ascontiguousarray(rows, np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.d:
            raise ValueError(f"expected rows of shape (n, {self.d}), got {rows.shape}")
        bad = int((~np.isfinite(rows).all(axis=1)).sum())
        if bad:
            raise NonFiniteError(f"{bad} of {len(rows)} fingerprints are not finite numbers")
        return self.codec.sa_encode(rows) if self.codec is not None else rows

    def append(self, rows: np.ndarray) -> int:
        """Append fingerprints float32 (n, d) durably; returns the index of the first new row."""
        return self.append_raw(self.encode(rows))

    def append_raw(self, raw: np.ndarray) -> int:
        """Append rows already in this store's form (see `raw`); returns the first new row."""
        first = len(self)
        with _open_no_follow(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND) as f:
            if os.fstat(f.fileno()).st_size != first * self.row_bytes:
                f.truncate(first * self.row_bytes)  # a torn last row: keep rows aligned
            f.write(np.ascontiguousarray(raw).tobytes())
            f.flush()
            os.fsync(f.fileno())
        return first

    def raw(self, n_rows: int | None = None) -> np.ndarray:
        """The first n_rows (default all) as stored, memory-mapped read-only: float32 (n, d) or
        uint8 codes (n, code_size)."""
        n = len(self) if n_rows is None else min(n_rows, len(self))
        if self.codec is None:
            shape, dtype = (n, self.d), np.float32
        else:
            shape, dtype = (n, self.row_bytes), np.uint8
        if n == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", shape=shape)

    def read(self, n_rows: int | None = None) -> np.ndarray | DecodedRows:
        """The first n_rows as float32 (n, d): the memory map itself, or decoded on access."""
        raw = self.raw(n_rows)
        return raw if self.codec is None else DecodedRows(raw, self.codec)
