"""Rebuilding a library beside the live one: the new library replaces the old only when it is
complete, in one atomic rename of the track database (docs/reliability.md). Used by
`nfp index --rebuild` and the desktop's "Re-index"; readers that may meet a rebuild's swap read
through `read_library`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from engine.core.errors import IndexCorruptError, NfpError
from engine.library.indexing import IndexProgress, IndexSummary, index_folders
from engine.library.library import Library
from engine.library.parallel import FingerprintSource
from engine.library.store import REBUILD_DB, LibraryFiles
from engine.library.tracks import DB_FILE, TrackDB
from engine.model.fingerprint import Fingerprinter

T = TypeVar("T")
READ_ATTEMPTS = 3  # a rebuild swaps one library in at a time; two swaps mid-read are rare


class StagedRebuild:
    """A new library being built beside the live one (see `rebuilding`)."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self.cancelled = False
        self.replaced = False  # whether it took the old library's place, once the block ended

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
                last = max(first, staged.library.db.records().generation)
            finally:
                staged.library.db.close()
                _finish_rebuild(files, staged_path, range(first, last + 1), complete)
                staged.replaced = complete
    finally:
        files.close()


def rebuild_library(
    db_dir: str | Path,
    folders: Sequence[str | Path],
    fingerprinter: Fingerprinter | FingerprintSource,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> Generator[IndexProgress, None, IndexSummary]:
    """Index the folders into a new library that replaces the one in db_dir only when complete
    (`rebuilding`); a generator like index_folders, whose summary says whether it did."""
    with rebuilding(db_dir) as staged:
        summary = yield from index_folders(staged.library, folders, fingerprinter,
                                           should_stop=should_stop)  # fmt: skip
        if summary.cancelled:
            staged.cancel()
        elif not len(staged.library):
            summary += IndexSummary(notes=[f"{_names(folders)} no audio to index: the library "
                                           "was kept"])  # fmt: skip
    return summary + IndexSummary(replaced=staged.replaced)


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


def _names(folders: Sequence[str | Path]) -> str:
    """The folders as the user gave them, resolved, with their verb: "/music has", "/a, /b have"."""
    names = ", ".join(str(Path(f).expanduser().resolve()) for f in folders)
    return f"{names} {'has' if len(folders) == 1 else 'have'}"


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
