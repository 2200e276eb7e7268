"""The music library: folder scan, tags, SQLite track store, incremental and crash-safe indexing.

Layout of a library directory:
    tracks.sqlite      tracks and metadata (which checkpoint made the index, committed rows)
    vectors-N.f32      append-only fingerprints, generation N (a new one after compaction)
    vectors-N.pq       the same as product-quantisation codes once the library outgrows exact
    codec-N.faiss      search (FLAT_MAX_VECTORS), with the codec that reads them
    faiss.index/json   the search index, derived from the vectors; extended or rebuilt when stale

A file's fingerprints are appended and fsynced first, then its track row is committed in one
transaction that also advances `committed_rows`; rows past it (a crash in between) are cut off
when the library is opened, so a crash loses at most the file in flight.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from platformdirs import user_data_dir
from tinytag import TinyTag

from engine.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio
from engine.checkpoint import (
    Checkpoint,
    default_checkpoint_path,
    load_checkpoint,
    shipped_checkpoints,
)
from engine.errors import (
    EmptyLibraryError,
    IndexCorruptError,
    IndexMismatchError,
    LibraryBusyError,
    NfpError,
)
from engine.fingerprint import Fingerprinter
from engine.index import (
    ADD_CHUNK,
    FLAT_MAX_VECTORS,
    INDEX_FILE,
    INDEX_META,
    VectorIndex,
    VectorStore,
    load_codec,
    save_codec,
    train_codec,
)
from engine.search import SegmentMap

log = logging.getLogger(__name__)

LIBRARY_FORMAT = 1
DB_FILE = "tracks.sqlite"
LOCK_FILE = "write.lock"  # held while indexing, so no other opener cuts off rows in flight
COMPACT_DEAD_FRACTION = 0.25  # rewrite the vectors once a quarter of them belong to no track
HASH_CHUNK = 1 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    title TEXT NOT NULL,
    artist TEXT NOT NULL,
    album TEXT NOT NULL,
    duration_s REAL NOT NULL,
    first_segment INTEGER NOT NULL,
    n_segments INTEGER NOT NULL
);
"""


def default_db_dir() -> Path:
    """The per-user library directory (e.g. ~/.local/share/nfp/library on Linux)."""
    return Path(user_data_dir("nfp", appauthor=False)) / "library"


@dataclass(frozen=True)
class Track:
    id: int
    path: str
    title: str
    artist: str
    album: str
    duration_s: float
    first_segment: int
    n_segments: int


@dataclass(frozen=True)
class IndexProgress:
    """One step of an indexing run, yielded after each file."""

    done: int  # files handled so far
    total: int  # files to handle in this run
    path: str
    outcome: str  # "indexed" | "skipped"
    reason: str = ""  # why a file was skipped
    audio_s: float = 0.0  # seconds of audio fingerprinted from this file


@dataclass
class IndexSummary:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    moved: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    cancelled: bool = False


@dataclass(frozen=True)
class _ScannedFile:
    path: Path
    size: int
    mtime_ns: int


class Library:
    """One library directory, used from one thread at a time (the GUI's worker or the CLI)."""

    def __init__(self, db_dir: str | Path) -> None:
        self.db_dir = Path(db_dir)
        self.db_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.db_dir / DB_FILE, check_same_thread=False)
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise IndexCorruptError(self.db_dir, f"track store unreadable: {e}") from e
        self._lock = threading.Lock()
        self._search_cache: tuple[VectorIndex, SegmentMap, list[Track]] | None = None
        self._lock_file = open(self.db_dir / LOCK_FILE, "a")  # noqa: SIM115 (held while open)
        with contextlib.suppress(LibraryBusyError), self._writing():
            self._discard_uncommitted_vectors()  # only when nobody is appending right now

    def close(self) -> None:
        self._db.close()
        self._lock_file.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Exclusive, across processes, for as long as rows may be appended."""
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise LibraryBusyError(self.db_dir) from e
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- metadata -------------------------------------------------------------------------
    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, **values: object) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(k, str(v)) for k, v in values.items()],
        )

    @property
    def d(self) -> int | None:
        value = self.meta("d")
        return int(value) if value else None

    @property
    def committed_rows(self) -> int:
        return int(self.meta("committed_rows", "0"))

    def _generation(self) -> int:
        return int(self.meta("generation", "0"))

    def _rows_path(self, generation: int, compressed: bool) -> Path:
        return self.db_dir / f"vectors-{generation}.{'pq' if compressed else 'f32'}"

    def _codec_path(self, generation: int) -> Path:
        return self.db_dir / f"codec-{generation}.faiss"

    def _store(self) -> VectorStore:
        """The current generation's rows, with the codec that reads them if compressed."""
        generation = self._generation()
        if not self.meta("codec"):
            return VectorStore(self._rows_path(generation, False), self.d or 0)
        codec_path = self._codec_path(generation)
        try:
            codec = load_codec(codec_path)
        except (OSError, RuntimeError) as e:
            raise IndexCorruptError(self.db_dir, f"{codec_path.name} unreadable: {e}") from e
        return VectorStore(self._rows_path(generation, True), self.d or 0, codec)

    def _new_store(self, generation: int, codec: faiss.Index | None) -> VectorStore:
        if codec is not None:
            save_codec(codec, self._codec_path(generation))
        return VectorStore(self._rows_path(generation, codec is not None), self.d or 0, codec)

    def _discard_uncommitted_vectors(self) -> None:
        if not self.d:
            return
        store = self._store()
        store.truncate(self.committed_rows)
        current = {store.path, self._codec_path(self._generation())}
        for stale in _row_files(self.db_dir):
            if stale not in current:
                stale.unlink()

    def built_by(self, checkpoint: Checkpoint) -> bool | None:
        """Whether this library's fingerprints are the checkpoint's; None before the first track.

        Libraries are bound to the weights, not the file, whose calibration may be renewed.
        """
        weights = self.meta("fingerprints_sha256")
        if weights is not None:
            return weights == checkpoint.weights_sha256
        file = self.meta("checkpoint_sha256")  # a library made before weights were recorded
        return None if file is None else file == checkpoint.sha256

    def check_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Raise IndexMismatchError unless this library was built by this checkpoint's weights."""
        if self.built_by(checkpoint) is False:
            name = self.meta("checkpoint_name", "another checkpoint")
            raise IndexMismatchError(
                self.db_dir, f"its fingerprints were made by {name}, not by {checkpoint.path}"
            )

    def _bind(self, checkpoint: Checkpoint) -> None:
        self.check_checkpoint(checkpoint)
        if self.built_by(checkpoint) is None:
            with self._db:
                self._set_meta(
                    format=LIBRARY_FORMAT,
                    checkpoint_sha256=checkpoint.sha256,
                    fingerprints_sha256=checkpoint.weights_sha256,
                    checkpoint_name=checkpoint.path.name,
                    encoder=json.dumps(checkpoint.config.to_dict()),
                    d=checkpoint.d,
                    committed_rows=0,
                    generation=0,
                )

    def remember_checkpoint_path(self, path: Path) -> None:
        """Where the checkpoint that built this library lives, to find it again for queries."""
        with self._db:
            self._set_meta(checkpoint_path=str(Path(path).resolve()))

    def info(self) -> dict:
        """What is in this library, for `nfp info` and the app's status line."""
        n_tracks, audio_s, live = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(duration_s), 0), COALESCE(SUM(n_segments), 0) "
            "FROM tracks"
        ).fetchone()
        files = list(self.db_dir.iterdir())
        return {
            "db": str(self.db_dir),
            "tracks": n_tracks,
            "hours": round(audio_s / 3600, 3),
            "segments": live,
            "stored_rows": self.committed_rows,
            "d": self.d,
            "checkpoint": self.meta("checkpoint_name"),
            "checkpoint_sha256": self.meta("checkpoint_sha256"),
            "fingerprints_sha256": self.meta("fingerprints_sha256"),
            "index_spec": _read_spec(self.db_dir),
            "bytes_on_disk": sum(f.stat().st_size for f in files if f.is_file()),
        }

    # ---- tracks ---------------------------------------------------------------------------
    def tracks(self) -> list[Track]:
        rows = self._db.execute(
            "SELECT id, path, title, artist, album, duration_s, first_segment, n_segments "
            "FROM tracks ORDER BY first_segment"
        ).fetchall()
        return [Track(*row) for row in rows]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]

    def _known_files(self) -> dict[str, tuple[int, int, str]]:
        rows = self._db.execute("SELECT path, size, mtime_ns, content_hash FROM tracks")
        return {p: (s, m, h) for p, s, m, h in rows}

    def _add_track(self, f: _ScannedFile, content_hash: str, fp: np.ndarray, tags: dict) -> None:
        with self._lock:
            store = self._store()
            first = store.append(fp)
            with (
                self._db
            ):  # one transaction: the track and the rows it owns become visible together
                self._db.execute("DELETE FROM tracks WHERE path = ?", (str(f.path),))
                self._db.execute(
                    "INSERT INTO tracks (path, size, mtime_ns, content_hash, title, artist, album,"
                    " duration_s, first_segment, n_segments) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        str(f.path),
                        f.size,
                        f.mtime_ns,
                        content_hash,
                        tags["title"],
                        tags["artist"],
                        tags["album"],
                        tags["duration_s"],
                        first,
                        len(fp),
                    ),
                )
                self._set_meta(committed_rows=first + len(fp))
            self._search_cache = None

    def _remove_paths(self, paths: list[str]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM tracks WHERE path = ?", [(p,) for p in paths])
            self._search_cache = None

    def _move(self, old: str, f: _ScannedFile) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE tracks SET path = ?, size = ?, mtime_ns = ? WHERE path = ?",
                (str(f.path), f.size, f.mtime_ns, old),
            )
            self._search_cache = None

    # ---- search index ---------------------------------------------------------------------
    def search_index(self) -> tuple[VectorIndex, SegmentMap, list[Track]]:
        """The faiss index, the row → track map and the tracks, built or loaded once."""
        if self._search_cache is None:
            tracks = self.tracks()
            if not tracks or not self.d:
                raise EmptyLibraryError(self.db_dir)
            index = self._load_or_build_index()
            first = np.array([t.first_segment for t in tracks])
            length = np.array([t.n_segments for t in tracks])
            self._search_cache = (
                index,
                SegmentMap.from_tracks(first, length, len(index.vectors)),
                tracks,
            )
        return self._search_cache

    def _load_or_build_index(self) -> VectorIndex:
        store = self._store()
        vectors = store.read()
        if len(vectors) != self.committed_rows:
            raise IndexCorruptError(self.db_dir, "fewer stored fingerprints than tracks need")
        index = VectorIndex.load(self.db_dir, vectors, store.path.name)
        index = index or VectorIndex.build(vectors)
        if index.unsaved:
            # Best effort: a reader of a library it may not write to still gets its answer.
            with contextlib.suppress(OSError):
                index.save(self.db_dir, store.path.name)
        return index

    def rewrite_store_if_needed(self) -> bool:
        """Rewrite the rows into a new generation when it pays: without the rows of removed
        tracks once they are a large share, and as 8× smaller codes once the library outgrows
        exact search. The switch is one transaction; a crash before it leaves the old store."""
        tracks = self.tracks()
        live = sum(t.n_segments for t in tracks)
        old = self._store()
        compress = old.codec is None and live > FLAT_MAX_VECTORS
        dead = self.committed_rows - live
        if not compress and dead <= COMPACT_DEAD_FRACTION * max(self.committed_rows, 1):
            return False
        with self._lock:
            generation = self._generation() + 1
            codec = train_codec(old.read()) if compress else old.codec
            new = self._new_store(generation, codec)
            keep = np.concatenate(
                [np.arange(t.first_segment, t.first_segment + t.n_segments) for t in tracks]
                or [np.zeros(0, np.int64)]
            )
            raw = old.raw()
            for start in range(0, len(keep), ADD_CHUNK):
                rows = raw[keep[start : start + ADD_CHUNK]]
                (new.append if compress else new.append_raw)(rows)
            firsts = np.concatenate([[0], np.cumsum([t.n_segments for t in tracks])[:-1]])
            with self._db:
                self._db.executemany(
                    "UPDATE tracks SET first_segment = ? WHERE id = ?",
                    [(int(f), t.id) for f, t in zip(firsts, tracks, strict=True)],
                )
                self._set_meta(generation=generation, committed_rows=live,
                               codec="pq" if new.codec is not None else "")  # fmt: skip
            del raw
            self._discard_uncommitted_vectors()
            self._search_cache = None
        return True

    def refresh_search_index(self) -> None:
        """Bring the saved search index up to date (called at the end of indexing)."""
        self._search_cache = None
        if len(self):
            self._load_or_build_index()

    # ---- indexing -------------------------------------------------------------------------
    def update(
        self,
        folder: str | Path,
        fingerprinter: Fingerprinter,
        *,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Generator[IndexProgress, None, IndexSummary]:
        """Bring the library in line with a folder: index new and changed files, drop removed ones.

        A generator: yields an IndexProgress after each file and returns the IndexSummary. One bad
        file is reported and skipped, never fatal. `should_stop` is polled between files; stopping
        keeps everything indexed so far.
        """
        folder = Path(folder).expanduser().resolve()
        if not folder.is_dir():
            raise NfpError(f"{folder}: not a folder")
        with self._writing():
            return (yield from self._update(folder, fingerprinter, should_stop))

    def _update(
        self, folder: Path, fingerprinter: Fingerprinter, should_stop: Callable[[], bool]
    ) -> Generator[IndexProgress, None, IndexSummary]:
        self._bind(fingerprinter.checkpoint)
        started = time.perf_counter()
        summary = IndexSummary()
        scanned = list(scan_folder(folder, on_error=lambda p, r: summary.skipped.append((p, r))))
        known = self._known_files()
        in_folder = {str(f.path) for f in scanned}
        gone = {p: known[p][2] for p in known if _is_under(p, folder) and p not in in_folder}
        todo = [f for f in scanned if known.get(str(f.path), ())[:2] != (f.size, f.mtime_ns)]
        summary.unchanged = len(scanned) - len(todo)
        yield from self._index_files(todo, gone, fingerprinter, summary, should_stop)
        if not summary.cancelled:
            self._remove_paths(list(gone))
            summary.removed = len(gone)
            self.rewrite_store_if_needed()
        self.refresh_search_index()
        summary.elapsed_s = time.perf_counter() - started
        return summary

    def _index_files(
        self,
        todo: list[_ScannedFile],
        gone: dict[str, str],
        fingerprinter: Fingerprinter,
        summary: IndexSummary,
        should_stop: Callable[[], bool],
    ) -> Iterator[IndexProgress]:
        moved_from = {h: p for p, h in gone.items()}
        for done, (f, loaded) in enumerate(_prefetch(todo), start=1):
            if should_stop():
                summary.cancelled = True
                return
            progress = self._index_one(f, loaded, moved_from, gone, fingerprinter, summary)
            yield IndexProgress(done=done, total=len(todo), path=str(f.path), **progress)

    def _index_one(
        self,
        f: _ScannedFile,
        loaded: Future,
        moved_from: dict[str, str],
        gone: dict[str, str],
        fingerprinter: Fingerprinter,
        summary: IndexSummary,
    ) -> dict:
        try:
            content_hash, audio, tags = loaded.result()
        except NfpError as e:
            summary.skipped.append((str(f.path), _reason(e)))
            log.info("skipped %s", e)
            return {"outcome": "skipped", "reason": _reason(e)}
        if content_hash in moved_from:  # a renamed or moved file: keep its fingerprints
            old = moved_from.pop(content_hash)
            gone.pop(old)
            self._move(old, f)
            summary.moved += 1
            return {"outcome": "indexed", "audio_s": 0.0}
        fp = fingerprinter.audio(audio)
        self._add_track(f, content_hash, fp, tags)
        summary.indexed += 1
        summary.audio_s += len(audio) / SAMPLE_RATE
        return {"outcome": "indexed", "audio_s": len(audio) / SAMPLE_RATE}


def remove_library(db_dir: Path) -> None:
    """Delete a library's files (tracks, fingerprints, search index) to start over."""
    for name in (DB_FILE, INDEX_FILE, INDEX_META):
        (db_dir / name).unlink(missing_ok=True)
    for rows in _row_files(db_dir):
        rows.unlink()


def _row_files(db_dir: Path) -> list[Path]:
    """Every generation's fingerprint rows and codecs (and their temporary files)."""
    return [*db_dir.glob("vectors-*"), *db_dir.glob("codec-*")]


def checkpoint_for_library(library: Library, explicit: Path | None = None) -> Checkpoint:
    """The explicit checkpoint, else the one that built the library, else the shipped default."""
    if explicit is not None:
        return load_checkpoint(explicit)
    recorded = library.meta("checkpoint_path")
    for path in ([Path(recorded)] if recorded else []) + shipped_checkpoints():
        if path.is_file():
            checkpoint = load_checkpoint(path)
            if library.built_by(checkpoint) is not False:
                return checkpoint
    return load_checkpoint(default_checkpoint_path())


def scan_folder(
    folder: Path, *, on_error: Callable[[str, str], None] = lambda p, r: None
) -> Iterator[_ScannedFile]:
    """Audio files under folder, recursively, in a stable order. Unreadable folders are reported."""

    def report(e: OSError) -> None:
        on_error(str(e.filename), e.strerror or str(e))

    for root, dirs, files in os.walk(folder, onerror=report, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            try:
                st = path.stat()
            except OSError as e:
                on_error(str(path), e.strerror or str(e))
                continue
            yield _ScannedFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def read_tags(path: Path, duration_s: float) -> dict:
    """Title, artist, album, duration; the file name stands in for a missing title."""
    tags = {"title": path.stem, "artist": "", "album": "", "duration_s": duration_s}
    try:
        tag = TinyTag.get(str(path))
    except Exception as e:  # tinytag raises its own and OS errors; tags are optional either way
        log.info("%s: no tags (%s)", path, e)
        return tags
    tags.update(
        {k: v.strip() for k in ("title", "artist", "album") if (v := getattr(tag, k, None))}
    )
    return tags


def content_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_file(path: Path) -> tuple[str, np.ndarray, dict]:
    try:
        digest = content_hash(path)
    except OSError as e:
        raise NfpError(f"{path}: cannot read ({e.strerror or e})") from e
    audio = load_audio(path)
    return digest, audio, read_tags(path, len(audio) / SAMPLE_RATE)


def _prefetch(files: list[_ScannedFile]) -> Iterator[tuple[_ScannedFile, Future]]:
    """Decode the next file in a thread while this one is fingerprinted (PyAV frees the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nfp-decode") as pool:
        ahead = iter(files)
        pending = [(f, pool.submit(_load_file, f.path)) for f in itertools.islice(ahead, 1)]
        while pending:
            pending.extend((f, pool.submit(_load_file, f.path)) for f in itertools.islice(ahead, 1))
            yield pending.pop(0)


def _is_under(path: str, folder: Path) -> bool:
    return Path(path).is_relative_to(folder)


def _reason(e: Exception) -> str:
    return getattr(e, "cause", None) or str(e)


def _read_spec(db_dir: Path) -> str | None:
    try:
        return json.loads((db_dir / INDEX_META).read_text())["spec"]
    except (OSError, ValueError, KeyError):
        return None
