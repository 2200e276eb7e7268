"""Rebuilding a library beside the live one: the new library replaces the old only when it is
complete, in one atomic rename of the track database (docs/reliability.md). Used by
`nfp index --rebuild` and the desktop's "Re-index"."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from engine.core.errors import NfpError
from engine.library.library import IndexProgress, IndexSummary, Library, music_folder
from engine.library.parallel import FingerprintSource
from engine.library.store import REBUILD_DB, LibraryFiles
from engine.library.tracks import DB_FILE, TrackDB
from engine.model.fingerprint import Fingerprinter


class StagedRebuild:
    """A new library being built beside the live one (see `rebuilding`)."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self.cancelled = False

    def cancel(self) -> None:
        """Throw the new library away when the block ends; the old one stays."""
        self.cancelled = True


@contextlib.contextmanager
def rebuilding(db_dir: str | Path) -> Iterator[StagedRebuild]:
    """A new, empty library beside the one in db_dir, under its write lock, for the caller to
    index into. When the block ends without an error, not cancelled and with tracks, the new
    library replaces the old one in one atomic rename of the track database; otherwise it is
    thrown away and the old library stays as it was (also after a crash). A damaged library is
    rebuilt without being read; a directory holding files nfp did not make is refused."""
    files = LibraryFiles(Path(db_dir), writable=True)
    try:
        with files.writing():
            foreign = files.foreign_files()
            if foreign:
                raise NfpError(f"{db_dir}: holds files nfp did not make ({', '.join(foreign[:3])});"
                               " refusing to rebuild a library there")  # fmt: skip
            staged_path = files.db_dir / REBUILD_DB
            staged_path.unlink(missing_ok=True)
            staged = StagedRebuild(Library.staged(files, TrackDB(staged_path, writable=True)))
            first = staged.library.staged_from
            complete, last = False, first
            try:
                yield staged
                complete = not staged.cancelled and len(staged.library) > 0
                last = max(first, staged.library.generation)
            finally:
                staged.library.db.close()
                _finish_rebuild(files, staged_path, range(first, last + 1), complete)
    finally:
        files.close()


def rebuild_library(
    db_dir: str | Path,
    folder: str | Path,
    fingerprinter: Fingerprinter | FingerprintSource,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> Generator[IndexProgress, None, IndexSummary]:
    """Index folder into a new library that replaces the one in db_dir only when complete
    (`rebuilding`); a generator like Library.update."""
    folder = music_folder(folder)
    with rebuilding(db_dir) as staged:
        staged.library.remember_checkpoint_path(fingerprinter.checkpoint.path)
        update = staged.library.update(folder, fingerprinter, should_stop=should_stop)
        summary = yield from update
        if summary.cancelled:
            staged.cancel()
        elif not len(staged.library):
            summary.notes.append(f"{folder} has no audio to index: the library was kept")
    return summary


def _finish_rebuild(files: LibraryFiles, staged: Path, made: range, complete: bool) -> None:
    """Swap the staged track database in, or throw it away with the generations it made."""
    if not complete:
        staged.unlink(missing_ok=True)
        files.remove_generations(keep=None, among=made)
        return
    # A hot journal of the replaced database must not be replayed onto the new one.
    (files.db_dir / (DB_FILE + "-journal")).unlink(missing_ok=True)
    os.replace(staged, files.db_dir / DB_FILE)
    _fsync_dir(files.db_dir)
    files.remove_generations(keep=made[-1])


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
