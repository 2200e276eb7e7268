"""The music library: one directory that indexing keeps in line with the user's music folders.

Three owners, one concern each: engine.library.scan reads folders, engine.library.tracks is the
SQLite track database, engine.library.store owns the files and their invariants. This module joins
them: incremental indexing (one bad file is a skip reason, never the end of the scan), the integrity
check that finds damaged rows, and the search index that identification reads;
engine.library.rebuild builds a new library beside the live one. docs/reliability.md lists the
promises and their tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from platformdirs import user_data_dir

from engine.core.errors import (
    CheckpointError,
    EmptyLibraryError,
    IndexCorruptError,
    IndexMismatchError,
    LibraryBusyError,
    LibraryWriteError,
    NfpError,
)
from engine.library.index import FLAT_MAX_VECTORS, VectorIndex, read_index_meta
from engine.library.parallel import FileFingerprints, FingerprintSource, as_source
from engine.library.scan import FolderScan, ScannedFile, scan_folder
from engine.library.segments import SegmentMap
from engine.library.store import (
    REBUILD_DB,
    LibraryFiles,
    VectorStore,
    is_own_file,
    rows_digest,
    train_codec,
)
from engine.library.tracks import DB_FILE, LIBRARY_FORMAT, NewTrack, Track, TrackDB
from engine.model.checkpoint import MAX_D, Checkpoint, default_checkpoint_path, shipped_checkpoints
from engine.model.fingerprint import Fingerprinter
from engine.model.load import load_checkpoint

log = logging.getLogger(__name__)

COMPACT_DEAD_FRACTION = 0.25  # rewrite the rows once a quarter of them belong to no track
UNIT_NORM_TOLERANCE = 1e-2  # stored float32 rows are unit vectors; damaged bytes are not
# Bytes of rows whose checksums a reader verifies when it loads a library (all of them up to
# here: ≈ 0.1 s; beyond, evenly spread tracks of this many bytes): rows swapped with another
# library's are unit vectors too, and only the checksums tell them apart.
LOAD_CHECK_BYTES = 256 << 20


def default_db_dir() -> Path:
    """The per-user library directory (e.g. ~/.local/share/nfp/library on Linux)."""
    return Path(user_data_dir("nfp", appauthor=False)) / "library"


@dataclass(frozen=True)
class IndexProgress:
    """One step of an indexing run, yielded after each file."""

    done: int  # files handled so far
    total: int  # files to handle in this run
    path: str
    outcome: str  # "indexed" | "skipped"
    reason: str = ""  # why a file was skipped
    audio_s: float = 0.0  # seconds of audio fingerprinted from this file
    track: Track | None = None  # the track as now stored, for a newly fingerprinted file


@dataclass
class IndexSummary:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    moved: int = 0
    repaired: int = 0  # tracks whose damaged rows were fingerprinted again
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[str] = field(default_factory=list)  # what the user should know (kept tracks…)
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    cancelled: bool = False


T = TypeVar("T")
READ_ATTEMPTS = 3  # a rebuild swaps one library in at a time; two swaps mid-read are rare


def read_library(db_dir: str | Path, read: Callable[[Library], T]) -> T:
    """read(library) on the library in db_dir, opened read-only. A rebuild may swap a new
    library in while it reads and remove the rows of the one it opened, which then look
    missing: it reads the new library instead, never reporting the old one damaged."""
    for _ in range(READ_ATTEMPTS - 1):
        with Library(db_dir, writable=False) as library:
            try:
                return read(library)
            except IndexCorruptError:
                if not library.db.replaced():
                    raise
    with Library(db_dir, writable=False) as library:
        return read(library)


class Library:
    """One library directory, used from one thread at a time (the GUI's worker or the CLI).

    `writable=False` opens it for reading only: nothing on disk is created or changed, so it
    works on a read-only disk and beside a running indexer.
    """

    def __init__(self, db_dir: str | Path, *, writable: bool = True) -> None:
        self.db_dir = Path(db_dir)
        if self.db_dir.exists() and not self.db_dir.is_dir():
            raise NfpError(f"{self.db_dir}: not a library folder (it is a file)")
        if not writable and not (self.db_dir / DB_FILE).is_file():
            raise EmptyLibraryError(self.db_dir)
        files = LibraryFiles(self.db_dir, writable=writable)
        try:
            self._attach(files, TrackDB(self.db_dir / DB_FILE, writable=writable))
        except NfpError:
            files.close()
            raise
        if writable:
            with contextlib.suppress(LibraryBusyError), self.files.writing():
                self._recover()  # only when nobody is appending right now

    def _attach(self, files: LibraryFiles, db: TrackDB, staged_from: int | None = None) -> None:
        self.db_dir, self.files, self.db = files.db_dir, files, db
        self._lock = threading.Lock()
        self._search_cache: tuple[VectorIndex, SegmentMap, list[Track]] | None = None
        # A staged library (a rebuild in progress) owns only the generations from this one on.
        self.staged_from = staged_from

    @classmethod
    def staged(cls, files: LibraryFiles, db: TrackDB) -> Library:
        """A library on another track database in the same directory (engine.library.rebuild), whose
        rows start a generation of their own."""
        staged = cls.__new__(cls)
        staged._attach(files, db, staged_from=files.next_generation())
        return staged

    def close(self) -> None:
        self.db.close()
        self.files.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- records --------------------------------------------------------------------------
    def meta(self, key: str, default: str | None = None) -> str | None:
        return self.db.meta(key, default)

    @property
    def d(self) -> int | None:
        """The fingerprints' width; None before the first track."""
        d = self.db.int_meta("d")
        if d == 0 and self.meta("d") is None:
            return None
        if not 0 < d <= MAX_D:
            raise IndexCorruptError(self.db_dir, f"record d={d} is not a fingerprint width")
        return d

    @property
    def committed_rows(self) -> int:
        return self.db.int_meta("committed_rows")

    @property
    def generation(self) -> int:
        """Which generation of row files is current."""
        return self.db.int_meta("generation")

    def _store(self) -> VectorStore:
        """The current generation's rows, with the codec that reads them if compressed."""
        generation, d, compressed = self.generation, self.d or 0, bool(self.meta("codec"))
        try:
            return self.files.store(generation, d, compressed)
        except NfpError as e:
            raise self.damaged_error(str(e)) from e

    def damaged_error(self, cause: str) -> IndexCorruptError:
        """The error for damaged rows, naming the command that repairs them: indexing the
        library's folders again re-fingerprints damaged tracks."""
        return IndexCorruptError(self.db_dir, cause, self.repair_command() or None)

    def repair_command(self, *, rebuild: bool = False) -> str:
        """`nfp index FOLDER --db DB` for each of the library's folders ('' if none are
        recorded); with --rebuild where the rows cannot be kept (another checkpoint's)."""
        db = shlex.quote(str(self.db_dir))
        flag = " --rebuild" if rebuild else ""
        return " && ".join(f"nfp index {shlex.quote(f)} --db {db}{flag}" for f in self._folders())

    def _recover(self) -> None:
        """A writer's clean-up after a crash: rows past the committed count, other generations'
        files, a rebuild that never finished; and checksums for rows stored before them."""
        self.files.remove_generations(keep=self.generation)
        for name in (REBUILD_DB, REBUILD_DB + "-journal"):
            (self.db_dir / name).unlink(missing_ok=True)
        if not self.d:
            return
        store = self._store()
        if not self._last_track_intact(store):
            return  # the records disagree with the rows: a reader reports it, nothing is cut
        store.truncate(self.committed_rows)
        hashes = self.db.rows_hashes()
        missing = [t for t in self.tracks() if not hashes.get(t.id)]
        if missing and len(store) >= self.committed_rows:
            raw = store.raw(self.committed_rows)
            with self.db.transaction():
                self.db.set_rows_hashes((_track_digest(raw, t), t.id) for t in missing)

    def _last_track_intact(self, store: VectorStore) -> bool:
        """Whether the last committed track's rows match its checksum as the records place
        them: only then are rows past the committed count a crash's tail (a tampered record of
        d or committed_rows would otherwise have good rows cut off or rewritten)."""
        tracks = self.tracks()
        if not tracks:
            return True
        last = max(tracks, key=lambda t: t.first_segment + t.n_segments)
        expected = self.db.rows_hashes().get(last.id)
        raw = store.raw(self.committed_rows)
        if last.first_segment + last.n_segments > len(raw):
            return False
        return not expected or _track_digest(raw, last) == expected

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
        """Raise IndexMismatchError unless this library was built by this checkpoint's weights,
        and IndexCorruptError if its record of d is not theirs (rows would be read at the wrong
        width, and a repair would store garbage)."""
        repair = self.repair_command(rebuild=True) or None
        if self.built_by(checkpoint) is False:
            name = self.meta("checkpoint_name", "another checkpoint")
            raise IndexMismatchError(
                self.db_dir, f"its fingerprints were made by {name}, not by {checkpoint.path}",
                repair,
            )  # fmt: skip
        if self.d is not None and self.d != checkpoint.d:
            raise IndexCorruptError(self.db_dir, f"record d={self.d} is not its checkpoint's "
                                    f"d={checkpoint.d}", repair)  # fmt: skip

    def _bind(self, checkpoint: Checkpoint, generation: int) -> None:
        self.check_checkpoint(checkpoint)
        if self.built_by(checkpoint) is None:
            with self.db.transaction():
                self.db.set_meta(
                    format=str(LIBRARY_FORMAT),
                    checkpoint_sha256=checkpoint.sha256,
                    fingerprints_sha256=checkpoint.weights_sha256,
                    checkpoint_name=checkpoint.path.name,
                    encoder=json.dumps(checkpoint.config.to_dict()),
                    d=str(checkpoint.d),
                    committed_rows="0",
                    generation=str(generation),
                )

    def remember_checkpoint_path(self, path: Path) -> None:
        """Where the checkpoint that built this library lives, to find it again for queries."""
        with self.db.transaction():
            self.db.set_meta(checkpoint_path=str(Path(path).resolve()))

    def _folders(self) -> list[str]:
        """The music folders indexed into this library (for repair messages); a damaged record
        only costs the message its folder names."""
        try:
            folders = self.db.json_meta("folders", [])
        except IndexCorruptError:
            return []
        return [f for f in folders if isinstance(f, str)] if isinstance(folders, list) else []

    def _remember_folder(self, folder: Path) -> None:
        folders = self._folders()
        if str(folder) not in folders:
            with self.db.transaction():
                self.db.set_meta(folders=[*folders, str(folder)])

    def info(self) -> dict:
        """What is in this library, for `nfp info` and the app's status line. Cheap: the
        checksum pass over every row is `damaged_tracks`, which `nfp info` adds."""
        n_tracks, audio_s, live = self.db.count()
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
            "bytes_on_disk": self.files.bytes_on_disk(),
        }

    def damaged_tracks(self, *, sample_bytes: int | None = None) -> list[Track]:
        """Tracks whose stored rows are missing or no longer match their checksum; with
        `sample_bytes`, of evenly spread tracks holding about that many bytes of rows."""
        if not self.d:
            return []
        hashes = self.db.rows_hashes()
        store = self._store()
        raw = store.raw(self.committed_rows)
        tracks = self.tracks()
        if sample_bytes is not None and tracks:
            every = max(1, len(raw) * store.row_bytes // max(sample_bytes, 1))
            tracks = tracks[::every] + tracks[-1:]
        return [
            t
            for t in tracks
            if t.first_segment + t.n_segments > len(raw)
            or (hashes.get(t.id) and _track_digest(raw, t) != hashes[t.id])
        ]

    def check_rows(self, *, sample_bytes: int | None = None) -> None:
        """Raise the damaged error (naming the repair) for rows that are missing or do not
        match their tracks' checksums: what `nfp info` checks, and a reader on load."""
        if self.d and len(self._store()) < self.committed_rows:
            raise self.damaged_error("stored fingerprints are missing (fewer than the tracks need)")
        damaged = self.damaged_tracks(sample_bytes=sample_bytes)
        if damaged:
            raise self.damaged_error(
                f"{len(damaged)} tracks have damaged or missing fingerprints"
                f"{' (of those checked)' if sample_bytes is not None else ''}"
            )

    # ---- tracks ---------------------------------------------------------------------------
    def tracks(self) -> list[Track]:
        return self.db.tracks()

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every file the last scans of the library's folders skipped."""
        return self.db.skipped()

    def __len__(self) -> int:
        return self.db.count()[0]

    def _add_track(self, track: NewTrack, fp: np.ndarray) -> Track:
        """Store one file's fingerprints (n, d), then commit its track with them."""
        with self._lock:
            store = self._store()
            raw = store.encode(fp)  # NonFiniteError: the file is skipped, the library untouched
            track = replace(track, rows_hash=rows_digest(raw))
            try:
                first = store.append_raw(raw)
            except OSError as e:
                raise LibraryWriteError(self.db_dir, e.strerror or str(e)) from e
            with self.db.transaction():  # the track and the rows it owns become visible together
                stored = self.db.add(track, first, len(fp))
                self.db.set_meta(committed_rows=str(first + len(fp)))
            self._search_cache = None
            return stored

    def _remove_paths(self, paths: list[str]) -> None:
        with self._lock:
            self.db.remove(paths)
            self._search_cache = None

    def _move(self, old: str, f: ScannedFile) -> None:
        with self._lock:
            self.db.move(old, str(f.path), f.size, f.mtime_ns)
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
            if (first + length).max() > len(index.vectors):
                raise self.damaged_error("tracks name rows past the end of the stored fingerprints")
            self._search_cache = (
                index,
                SegmentMap.from_tracks(first, length, len(index.vectors)),
                tracks,
            )
        return self._search_cache

    def _load_or_build_index(self) -> VectorIndex:
        store = self._store()
        vectors = store.read(self.committed_rows)
        if len(vectors) != self.committed_rows:
            raise self.damaged_error("stored fingerprints are missing (fewer than the tracks need)")
        if store.codec is None:
            _check_unit_rows(vectors, self)
        self.check_rows(sample_bytes=LOAD_CHECK_BYTES)
        index = VectorIndex.load(self.db_dir, vectors, store.path.name)
        index = index or VectorIndex.build(vectors)
        if index.unsaved and self.files.writable:
            # Best effort: a library on a full disk still answers.
            with contextlib.suppress(OSError):
                index.save(self.db_dir, store.path.name)
        return index

    def rewrite_store_if_needed(self, *, force: bool = False) -> bool:
        """Rewrite the rows into a new generation when it pays: without the rows of removed
        tracks once they are a large share, and as 8× smaller codes once the library outgrows
        exact search. The switch is one transaction; a crash before it leaves the old store."""
        tracks = self.tracks()
        live = sum(t.n_segments for t in tracks)
        old = self._store()
        compress = old.codec is None and live > FLAT_MAX_VECTORS
        dead = self.committed_rows - live
        compact = force or dead > COMPACT_DEAD_FRACTION * max(self.committed_rows, 1)
        if not (compress or compact):
            return False
        with self._lock:
            generation = self.generation + 1
            codec = train_codec(old.read(self.committed_rows)) if compress else old.codec
            new = self.files.new_store(generation, self.d or 0, codec)
            raw = old.raw(self.committed_rows)
            moved = []
            for t in tracks:
                rows = raw[t.first_segment : t.first_segment + t.n_segments]
                rows = new.encode(rows) if compress else rows
                moved.append((new.append_raw(rows), rows_digest(rows), t.id))
            with self.db.transaction():
                self.db.set_first_segments((first, track_id) for first, _, track_id in moved)
                self.db.set_rows_hashes((digest, track_id) for _, digest, track_id in moved)
                self.db.set_meta(generation=str(generation), committed_rows=str(live),
                                 codec="pq" if new.codec is not None else "")  # fmt: skip
            del raw
            among = None if self.staged_from is None else range(self.staged_from, generation)
            self.files.remove_generations(keep=generation, among=among)
            self._search_cache = None
        return True

    def refresh_search_index(self) -> None:
        """Bring the saved search index up to date (called at the end of indexing)."""
        self._search_cache = None
        if len(self):
            self._load_or_build_index()

    # ---- indexing -------------------------------------------------------------------------
    def remove_folder(self, folder: str | Path) -> int:
        """Forget a music folder, or a folder inside one: its tracks leave the library, except
        those inside another folder the library keeps within it; returns how many left. A
        folder that is missing on disk can be removed too (that is how its tracks are given
        up). NfpError, changing nothing, for a folder the library has nothing of."""
        folder = Path(folder).expanduser().resolve()  # as recorded (music_folder)
        with self.files.writing():
            folders = [Path(f) for f in self._folders()]
            # A folder inside the removed one keeps its tracks; one around it does not.
            kept = [f for f in folders if f != folder and not folder.is_relative_to(f)]
            paths = [p for p in self.db.known_files()
                     if Path(p).is_relative_to(folder)
                     and not any(Path(p).is_relative_to(k) for k in kept)]  # fmt: skip
            self._check_removable(folder, folders, paths)
            self._remove_paths(paths)
            self.db.set_skipped([str(folder)], [])
            with self.db.transaction():
                self.db.set_meta(folders=[str(f) for f in folders if f != folder])
            self.rewrite_store_if_needed()
            self.refresh_search_index()
        return len(paths)

    def _check_removable(self, folder: Path, folders: list[Path], paths: list[str]) -> None:
        """Refuse to remove what the library does not hold: a folder outside its music folders
        (`nfp remove /`), or one inside them without a track."""
        if folder in folders:
            return
        listed = ", ".join(map(str, folders)) or "none recorded"
        if folders and not any(folder.is_relative_to(f) for f in folders):
            raise NfpError(f"{folder}: not one of the library's music folders, nor inside one "
                           f"(they are: {listed}); nothing was removed")  # fmt: skip
        if not paths:
            raise NfpError(f"{folder}: the library has no track there; nothing was removed")

    def update(
        self,
        folder: str | Path,
        fingerprinter: Fingerprinter | FingerprintSource,
        *,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Generator[IndexProgress, None, IndexSummary]:
        """Bring the library in line with a folder: index new, changed and damaged files, drop
        removed ones.

        A generator: yields an IndexProgress after each file and returns the IndexSummary. One bad
        file is reported and skipped, never fatal. `should_stop` is polled between files; stopping
        keeps everything indexed so far. Tracks are removed only from folders that were read: a
        missing, empty or unreadable folder keeps its tracks, and the summary says so. A
        Fingerprinter runs in this process; a source (engine.library.parallel) may run elsewhere.
        """
        folder = music_folder(folder)
        with self.files.writing():
            return (yield from self._update(folder, as_source(fingerprinter), should_stop))

    def _update(
        self, folder: Path, source: FingerprintSource, should_stop: Callable[[], bool]
    ) -> Generator[IndexProgress, None, IndexSummary]:
        self._bind(source.checkpoint, self.staged_from or 0)
        self._remember_folder(folder)
        started = time.perf_counter()
        summary = IndexSummary()
        scan = scan_folder(folder)
        summary.skipped.extend(scan.skipped)
        known = self.db.known_files()
        gone = self._gone(scan, known, summary)
        damaged = {t.path for t in self.damaged_tracks()}
        todo = [
            f
            for f in scan.files
            if known.get(str(f.path), ())[:2] != (f.size, f.mtime_ns) or str(f.path) in damaged
        ]
        summary.unchanged = len(scan.files) - len(todo)
        yield from self._index_files(todo, gone, source, summary, should_stop)
        summary.repaired = len(damaged & {str(f.path) for f in todo})
        # A whole scan replaces the folder's skips; a cancelled one only adds what it met.
        self.db.set_skipped([] if summary.cancelled else [str(folder)], summary.skipped)
        if not summary.cancelled:
            self._remove_paths(list(gone))
            summary.removed = len(gone)
            # Damaged rows left behind by a repair must not stay in the search index.
            self.rewrite_store_if_needed(force=summary.repaired > 0)
        self.refresh_search_index()
        summary.elapsed_s = time.perf_counter() - started
        return summary

    def _gone(self, scan: FolderScan, known: dict, summary: IndexSummary) -> dict[str, str]:
        """path → content hash of the tracks under the scanned folder that are really gone."""
        under = {p: v[2] for p, v in known.items() if Path(p).is_relative_to(scan.folder)}
        if under and scan.n_entries == 0:
            summary.notes.append(f"{scan.folder} is empty (an unmounted disk?): "
                                 f"kept its {len(under)} tracks")  # fmt: skip
            return {}
        found = {str(f.path) for f in scan.files} | {p for p, _ in scan.skipped}
        kept = [p for p in under if p not in found and not scan.was_read(p)]
        if kept:
            summary.notes.append(f"kept {len(kept)} tracks in folders that could not be read")
        return {p: h for p, h in under.items() if p not in found and scan.was_read(p)}

    def _index_files(
        self,
        todo: list[ScannedFile],
        gone: dict[str, str],
        source: FingerprintSource,
        summary: IndexSummary,
        should_stop: Callable[[], bool],
    ) -> Iterator[IndexProgress]:
        moved_from = {h: p for p, h in gone.items()}
        done, batch = 0, todo
        while batch:
            again = []  # copies of one moved file: the first takes the move, the rest are new
            with contextlib.closing(source.fingerprints(batch, frozenset(moved_from))) as results:
                for f, outcome in results:
                    if should_stop():
                        summary.cancelled = True
                        return
                    if _copy_of_a_moved_file(outcome, moved_from):
                        again.append(f)
                        continue
                    done += 1
                    progress = self._index_one(f, outcome, moved_from, gone, summary)
                    yield IndexProgress(done=done, total=len(todo), path=str(f.path), **progress)
            batch = again

    def _index_one(
        self,
        f: ScannedFile,
        outcome: FileFingerprints | Exception,
        moved_from: dict[str, str],
        gone: dict[str, str],
        summary: IndexSummary,
    ) -> dict:
        """Store one file's outcome: its track, its move, or its skip reason."""
        try:
            if isinstance(outcome, Exception):
                raise outcome
            if outcome.fp is None:  # a renamed or moved file: keep its fingerprints
                old = moved_from.pop(outcome.digest)
                gone.pop(old)
                self._move(old, f)
                summary.moved += 1
                return {"outcome": "indexed", "audio_s": 0.0}
            track = NewTrack(str(f.path), f.size, f.mtime_ns, outcome.digest, outcome.tags, "")
            stored = self._add_track(track, outcome.fp)
        except LibraryWriteError:
            raise  # not this file's fault: the run ends with it
        except NfpError as e:
            return _skip(summary, f, _reason(e))
        except Exception as e:  # one file's surprise is its skip reason, never the scan's end
            log.warning("skipped %s", f.path, exc_info=e)
            return _skip(summary, f, f"unexpected {type(e).__name__}: {e}")
        summary.indexed += 1
        summary.audio_s += outcome.audio_s
        return {"outcome": "indexed", "audio_s": outcome.audio_s, "track": stored}


def music_folder(folder: str | Path) -> Path:
    """The folder to index, resolved; an error that keeps every track if it is not there."""
    path = Path(folder).expanduser()
    try:
        resolved = path.resolve()
        if resolved.is_dir():
            return resolved
    except OSError:
        pass
    raise NfpError(f"{path}: not a folder (the library keeps its tracks from there)")


def remove_library(db_dir: Path) -> None:
    """Delete a library's files (tracks, fingerprints, search index), nothing else."""
    if Path(db_dir).is_dir():
        for path in Path(db_dir).iterdir():
            if is_own_file(path.name) and path.is_file():
                path.unlink()


def checkpoint_for_library(library: Library, explicit: Path | None = None) -> Checkpoint:
    """The explicit checkpoint, else the one that built the library, else the shipped default."""
    if explicit is not None:
        return load_checkpoint(explicit)
    recorded = library.meta("checkpoint_path")
    for path in ([Path(recorded)] if recorded else []) + shipped_checkpoints():
        if not path.is_file():
            continue
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as e:
            if path not in shipped_checkpoints():
                log.warning("%s; looking for the same weights among the shipped checkpoints", e)
                continue
            raise
        if library.built_by(checkpoint) is not False:
            return checkpoint
    return load_checkpoint(default_checkpoint_path())


def _copy_of_a_moved_file(outcome: FileFingerprints | Exception, moved_from: dict) -> bool:
    """Whether a file came back unfingerprinted as a moved track's content, but another copy of
    that content already took the move: it needs fingerprints of its own."""
    return (
        isinstance(outcome, FileFingerprints)
        and outcome.fp is None
        and outcome.digest not in moved_from
    )


def _skip(summary: IndexSummary, f: ScannedFile, reason: str) -> dict:
    summary.skipped.append((str(f.path), reason))
    log.info("skipped %s: %s", f.path, reason)
    return {"outcome": "skipped", "reason": reason}


def _track_digest(raw: np.ndarray, track: Track) -> str:
    return rows_digest(raw[track.first_segment : track.first_segment + track.n_segments])


def _check_unit_rows(vectors: np.ndarray, library: Library) -> None:
    """Refuse float32 rows that are not unit vectors: damaged bytes (cheap: one pass)."""
    norms = np.einsum("nd,nd->n", vectors, vectors)
    bad = int((~(np.abs(norms - 1.0) <= 2 * UNIT_NORM_TOLERANCE)).sum())
    if bad:
        raise library.damaged_error(f"{bad} stored fingerprints are damaged (not unit vectors)")


def _reason(e: Exception) -> str:
    return getattr(e, "cause", None) or str(e)


def _read_spec(db_dir: Path) -> str | None:
    meta = read_index_meta(db_dir)
    return None if meta is None else meta["spec"]
