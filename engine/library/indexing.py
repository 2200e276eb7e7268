"""Indexing: bringing a library in line with music folders (docs/architecture.md, Indexing).

Per folder: scan it, plan the run (new, changed and damaged files to fingerprint; tracks whose
files are really gone), fingerprint the files here or on Dask workers (engine.library.parallel)
and store each one's rows and track as it arrives (a moved file keeps its fingerprints), then drop
the tracks that are gone, compact the rows where due and refresh the search index. One bad file
is a skip reason, never the end of the scan; a folder that is missing, empty or unreadable keeps
its tracks. A run is a generator: an IndexProgress after each file, and its IndexSummary as the
return value; the summaries of several runs add up (`a + b`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.core.errors import LibraryWriteError, NfpError
from engine.library.binding import bind, check_checkpoint, remember_checkpoint_path
from engine.library.compaction import compact_if_due
from engine.library.library import Library
from engine.library.parallel import FileFingerprints, FingerprintSource, as_source
from engine.library.scan import FolderScan, ScannedFile, scan_folder
from engine.library.searching import refresh_search_index
from engine.library.tracks import NewTrack, Track
from engine.model.fingerprint import ROWS_VERSION, Fingerprinter, require_reference

log = logging.getLogger(__name__)

MISSING_FOLDER = "not a folder (moved, deleted or on a drive that is not mounted?)"


@dataclass(frozen=True)
class IndexProgress:
    """One step of an indexing run, yielded after each file."""

    done: int  # files handled so far in this folder
    total: int  # files to handle in this folder
    path: str
    outcome: str  # "indexed" | "moved" | "skipped"
    reason: str = ""  # why a file was skipped
    audio_s: float = 0.0  # seconds of audio fingerprinted from this file
    track: Track | None = None  # the track as now stored, for a newly fingerprinted file
    folder_no: int = 1  # which of the run's folders (1-based)
    n_folders: int = 1


@dataclass(frozen=True)
class IndexSummary:
    """What an indexing run did; `a + b` is two runs as one (several folders)."""

    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    moved: int = 0
    repaired: int = 0  # tracks whose damaged rows were fingerprinted again
    refreshed: int = 0  # tracks fingerprinted again, their rows made under older rules
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[str] = field(default_factory=list)  # what the user should know (kept tracks…)
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    cancelled: bool = False
    replaced: bool = False  # a rebuild's new library took the old one's place

    def __add__(self, other: IndexSummary) -> IndexSummary:
        return IndexSummary(
            indexed=self.indexed + other.indexed,
            unchanged=self.unchanged + other.unchanged,
            removed=self.removed + other.removed,
            moved=self.moved + other.moved,
            repaired=self.repaired + other.repaired,
            refreshed=self.refreshed + other.refreshed,
            skipped=self.skipped + other.skipped,
            notes=self.notes + other.notes,
            audio_s=self.audio_s + other.audio_s,
            elapsed_s=self.elapsed_s + other.elapsed_s,
            cancelled=self.cancelled or other.cancelled,
            replaced=self.replaced or other.replaced,
        )


def _never() -> bool:
    return False


def index_folders(
    library: Library,
    folders: Sequence[str | Path],
    fingerprinter: Fingerprinter | FingerprintSource,
    *,
    should_stop: Callable[[], bool] = _never,
) -> Generator[IndexProgress, None, IndexSummary]:
    """Bring the library in line with each folder in turn (index_folder), with the
    fingerprinter's checkpoint, which the library records to find it again for queries; one
    summary for them all. A folder that is not there is a skip reason, and keeps its tracks.
    `should_stop` is polled between files: stopping keeps everything indexed so far. A
    fingerprinter of this process whose numbers are not its checkpoint's reference (a machine's
    wrong numeric path) is refused before anything is written: every row would be wrong."""
    if isinstance(fingerprinter, Fingerprinter):
        require_reference(fingerprinter)
    source = as_source(fingerprinter)
    check_checkpoint(library, source.checkpoint)
    remember_checkpoint_path(library, source.checkpoint.path)
    total = IndexSummary()
    for no, folder in enumerate(folders, start=1):
        if not Path(folder).expanduser().is_dir():
            total += IndexSummary(skipped=[(str(folder), MISSING_FOLDER)])
            continue
        total += yield from index_folder(library, folder, source, should_stop=should_stop,
                                         folder_no=no, n_folders=len(folders))  # fmt: skip
        if total.cancelled:
            break
    return total


def index_folder(
    library: Library,
    folder: str | Path,
    fingerprinter: Fingerprinter | FingerprintSource,
    *,
    should_stop: Callable[[], bool] = _never,
    folder_no: int = 1,
    n_folders: int = 1,
) -> Generator[IndexProgress, None, IndexSummary]:
    """Bring the library in line with a folder: index new, changed and damaged files, drop
    removed ones. Yields an IndexProgress after each file and returns the IndexSummary. Tracks
    are removed only from folders that were read: a missing, empty or unreadable folder keeps
    its tracks, and the summary says so. A Fingerprinter runs in this process; a source
    (engine.library.parallel) may run elsewhere. NfpError for a folder that is not there."""
    folder = music_folder(folder)
    source = as_source(fingerprinter)
    with library.files.writing():
        return (yield from _index(library, folder, source, should_stop, (folder_no, n_folders)))


@dataclass(frozen=True)
class _Plan:
    """What a scan of a folder leaves to do."""

    todo: list[ScannedFile]  # new, changed and damaged files, to fingerprint
    gone: dict[str, str]  # path → content hash of the folder's tracks whose files are gone
    found: IndexSummary  # what the scan alone tells: unchanged, repaired, skipped files, notes


@dataclass(frozen=True)
class _Position:
    """Where a file stands in the run, for its IndexProgress."""

    done: int
    total: int
    folder_no: int
    n_folders: int

    def step(
        self,
        f: ScannedFile,
        outcome: str,
        *,
        reason: str = "",
        audio_s: float = 0.0,
        track: Track | None = None,
    ) -> IndexProgress:
        return IndexProgress(
            done=self.done, total=self.total, path=str(f.path), outcome=outcome, reason=reason,
            audio_s=audio_s, track=track, folder_no=self.folder_no, n_folders=self.n_folders,
        )  # fmt: skip


def _index(
    library: Library,
    folder: Path,
    source: FingerprintSource,
    should_stop: Callable[[], bool],
    numbered: tuple[int, int],
) -> Generator[IndexProgress, None, IndexSummary]:
    started = time.perf_counter()
    bind(library, source.checkpoint)
    _remember_folder(library, folder)
    plan = _plan(library, scan_folder(folder))
    stored, gone = yield from _index_files(library, plan, source, should_stop, numbered)
    summary = plan.found + stored
    # A whole scan replaces the folder's skips; a cancelled one only adds what it met.
    library.db.set_skipped([] if summary.cancelled else [str(folder)], summary.skipped)
    if not summary.cancelled:
        library.remove_tracks(gone)
        summary += IndexSummary(removed=len(gone))
        # Damaged rows left behind by a repair must not stay in the search index.
        compact_if_due(library, force=summary.repaired > 0)
    refresh_search_index(library)
    return replace(summary, elapsed_s=time.perf_counter() - started)


def _plan(library: Library, scan: FolderScan) -> _Plan:
    known = library.db.known_files()
    gone, notes = _gone(scan, known)
    damaged = {t.path for t in library.damaged_tracks()}
    outdated = library.db.outdated_paths(ROWS_VERSION) - damaged
    redo = damaged | outdated
    todo = [
        f
        for f in scan.files
        if known.get(str(f.path), ())[:2] != (f.size, f.mtime_ns) or str(f.path) in redo
    ]
    paths = {str(f.path) for f in todo}
    found = IndexSummary(unchanged=len(scan.files) - len(todo), repaired=len(damaged & paths),
                         refreshed=len(outdated & paths), skipped=list(scan.skipped),
                         notes=notes)  # fmt: skip
    return _Plan(todo, gone, found)


def _gone(scan: FolderScan, known: dict) -> tuple[dict[str, str], list[str]]:
    """path → content hash of the tracks under the scanned folder that are really gone, and
    notes on the tracks kept because their folder could not be read."""
    under = {p: v[2] for p, v in known.items() if Path(p).is_relative_to(scan.folder)}
    if under and scan.n_entries == 0:
        return {}, [f"{scan.folder} is empty (an unmounted disk?): kept its {len(under)} tracks"]
    found = {str(f.path) for f in scan.files} | {p for p, _ in scan.skipped}
    kept = [p for p in under if p not in found and not scan.was_read(p)]
    notes = [f"kept {len(kept)} tracks in folders that could not be read"] if kept else []
    return {p: h for p, h in under.items() if p not in found and scan.was_read(p)}, notes


def _index_files(
    library: Library,
    plan: _Plan,
    source: FingerprintSource,
    should_stop: Callable[[], bool],
    numbered: tuple[int, int],
) -> Generator[IndexProgress, None, tuple[IndexSummary, list[str]]]:
    """Fingerprint and store the plan's files, an IndexProgress after each; returns what they
    came to, and the paths of the gone tracks that no moved file took over."""
    moved_from = {h: p for p, h in plan.gone.items()}  # content hash → gone path, until moved
    steps: list[IndexProgress] = []
    batch = plan.todo
    while batch:
        again = []  # copies of one moved file: the first takes the move, the rest are new
        with contextlib.closing(source.fingerprints(batch, frozenset(moved_from))) as results:
            for f, outcome in results:
                if should_stop():
                    return _tally(steps, cancelled=True), list(moved_from.values())
                if _copy_of_a_moved_file(outcome, moved_from):
                    again.append(f)
                    continue
                moved = isinstance(outcome, FileFingerprints) and outcome.fp is None
                old = moved_from.pop(outcome.digest) if moved else None
                at = _Position(len(steps) + 1, len(plan.todo), *numbered)
                steps.append(_store_file(library, f, outcome, old, at))
                yield steps[-1]
        batch = again
    return _tally(steps, cancelled=False), list(moved_from.values())


def _store_file(
    library: Library,
    f: ScannedFile,
    outcome: FileFingerprints | Exception,
    old: str | None,
    at: _Position,
) -> IndexProgress:
    """Store one file's outcome: its track, its move from the gone path `old`, or its skip
    reason."""
    try:
        if isinstance(outcome, Exception):
            raise outcome
        if old is not None:  # a renamed or moved file: keep its fingerprints
            library.move_track(old, str(f.path), f.size, f.mtime_ns)
            return at.step(f, "moved")
        track = NewTrack(str(f.path), f.size, f.mtime_ns, outcome.digest, outcome.tags, "",
                         ROWS_VERSION)  # fmt: skip
        stored = library.add_track(track, outcome.fp)
    except LibraryWriteError:
        raise  # not this file's fault: the run ends with it
    except NfpError as e:
        return _skipped(f, getattr(e, "cause", None) or str(e), at)
    except Exception as e:  # one file's surprise is its skip reason, never the scan's end
        log.warning("skipped %s", f.path, exc_info=e)
        return _skipped(f, f"unexpected {type(e).__name__}: {e}", at)
    return at.step(f, "indexed", audio_s=outcome.audio_s, track=stored)


def _skipped(f: ScannedFile, reason: str, at: _Position) -> IndexProgress:
    log.info("skipped %s: %s", f.path, reason)
    return at.step(f, "skipped", reason=reason)


def _tally(steps: list[IndexProgress], *, cancelled: bool) -> IndexSummary:
    """The summary of the files a run handled."""
    return IndexSummary(
        indexed=sum(s.outcome == "indexed" for s in steps),
        moved=sum(s.outcome == "moved" for s in steps),
        skipped=[(s.path, s.reason) for s in steps if s.outcome == "skipped"],
        audio_s=sum(s.audio_s for s in steps),
        cancelled=cancelled,
    )


def _copy_of_a_moved_file(outcome: FileFingerprints | Exception, moved_from: dict) -> bool:
    """Whether a file came back unfingerprinted as a moved track's content, but another copy of
    that content already took the move: it needs fingerprints of its own."""
    return (
        isinstance(outcome, FileFingerprints)
        and outcome.fp is None
        and outcome.digest not in moved_from
    )


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


def _remember_folder(library: Library, folder: Path) -> None:
    folders = library.folders()
    if str(folder) not in folders:
        with library.db.transaction():
            library.db.set_meta(folders=[*folders, str(folder)])


def remove_folder(library: Library, folder: str | Path) -> int:
    """Forget a music folder, or a folder inside one: its tracks leave the library, except
    those inside another folder the library keeps within it; returns how many left. A folder
    that is missing on disk can be removed too (that is how its tracks are given up). NfpError,
    changing nothing, for a folder the library has nothing of."""
    folder = Path(folder).expanduser().resolve()  # as recorded (music_folder)
    with library.files.writing():
        folders = [Path(f) for f in library.folders()]
        # A folder inside the removed one keeps its tracks; one around it does not.
        kept = [f for f in folders if f != folder and not folder.is_relative_to(f)]
        paths = [p for p in library.db.known_files()
                 if Path(p).is_relative_to(folder)
                 and not any(Path(p).is_relative_to(k) for k in kept)]  # fmt: skip
        _check_removable(folder, folders, paths)
        library.remove_tracks(paths)
        library.db.set_skipped([str(folder)], [])
        with library.db.transaction():
            library.db.set_meta(folders=[str(f) for f in folders if f != folder])
        compact_if_due(library)
        refresh_search_index(library)
    return len(paths)


def _check_removable(folder: Path, folders: list[Path], paths: list[str]) -> None:
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
