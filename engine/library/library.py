"""The music library: one directory of track records and fingerprint rows. Its records, its
tracks and the primitives that change them with the rows and the records in step; it joins the
owners below (tracks, store, integrity). Above it, each a concern of its own: binding (which
checkpoint it belongs to), searching (its search index), indexing (bringing it in line with music
folders), compaction (rewriting its rows) and rebuild (a new library beside the live one).
docs/reliability.md lists the promises and their tests.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.core.errors import (
    EmptyLibraryError,
    IndexCorruptError,
    LibraryBusyError,
    LibraryWriteError,
    NfpError,
)
from engine.library import integrity
from engine.library.index import VectorIndex, read_index_meta
from engine.library.integrity import rows_digest
from engine.library.segments import SegmentMap
from engine.library.store import REBUILD_DB, LibraryFiles, VectorStore
from engine.library.tracks import DB_FILE, NewTrack, Records, Track, TrackDB


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
        # The search index, row → track map and tracks, once loaded (engine.library.searching);
        # forgotten when the tracks or rows change.
        self.searched: tuple[VectorIndex, SegmentMap, list[Track]] | None = None
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

    def _recover(self) -> None:
        """A writer's clean-up after a crash: other generations' files, a rebuild that never
        finished, rows past the committed count (engine.library.integrity)."""
        snapshot = self.db.snapshot()
        self.files.remove_generations(keep=snapshot.records.generation)
        for name in (REBUILD_DB, REBUILD_DB + "-journal"):
            (self.db_dir / name).unlink(missing_ok=True)
        if snapshot.records.d:
            integrity.recover_rows(self.store(snapshot.records), self.db, snapshot)

    # ---- records --------------------------------------------------------------------------
    def store(self, records: Records | None = None) -> VectorStore:
        """The rows of the records' generation (read now if not given), with the codec that
        reads them if compressed."""
        records = self.db.records() if records is None else records
        try:
            return self.files.store(records.generation, records.d or 0, bool(records.codec))
        except NfpError as e:
            raise self.damaged_error(str(e)) from e

    def damaged_error(self, cause: str) -> IndexCorruptError:
        """The error for damaged rows, naming the command that repairs them: indexing the
        library's folders again re-fingerprints damaged tracks."""
        return IndexCorruptError(self.db_dir, cause, self.repair_command() or None)

    def repair_command(self, *, rebuild: bool = False, folders: Sequence[str] | None = None) -> str:
        """`nfp index FOLDER --db DB` for each of the library's folders (read now if not given;
        '' if none are recorded); with --rebuild where the rows cannot be kept (another
        checkpoint's)."""
        db = shlex.quote(str(self.db_dir))
        flag = " --rebuild" if rebuild else ""
        folders = self.folders() if folders is None else folders
        return " && ".join(f"nfp index {shlex.quote(f)} --db {db}{flag}" for f in folders)

    def folders(self) -> list[str]:
        """The music folders indexed into this library (for repair messages); a damaged record
        only costs the message its folder names."""
        return list(self.db.records(checked=False).folders)

    def info(self) -> dict:
        """What is in this library, for `nfp info` and the app's status line. Cheap: the
        checksum pass over every row is `damaged_tracks`, which `nfp info` adds."""
        records = self.db.records()
        n_tracks, audio_s, live = self.db.count()
        index_meta = read_index_meta(self.db_dir)
        return {
            "db": str(self.db_dir),
            "tracks": n_tracks,
            "hours": round(audio_s / 3600, 3),
            "segments": live,
            "stored_rows": records.committed_rows,
            "d": records.d,
            "checkpoint": records.checkpoint_name,
            "checkpoint_sha256": records.checkpoint_sha256,
            "fingerprints_sha256": records.fingerprints_sha256,
            "index_spec": None if index_meta is None else index_meta["spec"],
            "bytes_on_disk": self.files.bytes_on_disk(),
        }

    def damaged_tracks(self) -> list[Track]:
        """Tracks whose stored rows are missing or no longer match their checksum."""
        snapshot = self.db.snapshot()
        if not snapshot.records.d:
            return []
        raw = self.store(snapshot.records).raw(snapshot.records.committed_rows)
        return integrity.damaged_tracks(raw, snapshot)

    def check_rows(self) -> None:
        """Raise the damaged error (naming the repair) for rows that are missing or do not
        match their tracks' checksums: what `nfp info` checks (a reader checks more on load,
        engine.library.searching)."""
        snapshot = self.db.snapshot()
        if snapshot.records.d:
            raw = self.store(snapshot.records).raw(snapshot.records.committed_rows)
            cause = integrity.rows_damage(raw, snapshot)
            if cause:
                raise self.damaged_error(cause)

    # ---- tracks ---------------------------------------------------------------------------
    def tracks(self) -> list[Track]:
        return self.db.tracks()

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every file the last scans of the library's folders skipped."""
        return self.db.skipped()

    def __len__(self) -> int:
        return self.db.count()[0]

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Hold the library while its tracks or rows change (a search in another thread may be
        loading them); the search index is loaded again after the change."""
        with self._lock:
            yield
            self.searched = None

    def add_track(self, track: NewTrack, fp: np.ndarray) -> Track:
        """Store one file's fingerprints (n, d), then commit its track with them."""
        with self.changing():
            store = self.store()  # its records read now: this library's own writes change them
            raw = store.encode(fp)  # NonFiniteError: the file is skipped, the library untouched
            track = replace(track, rows_hash=rows_digest(raw))
            try:
                first = store.append_raw(raw)
            except OSError as e:
                raise LibraryWriteError(self.db_dir, e.strerror or str(e)) from e
            with self.db.transaction():  # the track and the rows it owns become visible together
                stored = self.db.add(track, first, len(fp))
                self.db.set_meta(committed_rows=str(first + len(fp)))
        return stored

    def move_track(self, old: str, new: str, size: int, mtime_ns: int) -> None:
        """A track's file moved: its fingerprints stay, its path changes."""
        with self.changing():
            self.db.move(old, new, size, mtime_ns)

    def remove_tracks(self, paths: list[str]) -> None:
        with self.changing():
            self.db.remove(paths)
