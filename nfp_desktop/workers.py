"""Long work off the GUI thread: a job is a generator; the worker turns its yields into signals.

A job is a callable taking `should_stop` and returning a generator. The worker drives it to the
end in its own thread; jobs poll `should_stop` between their steps (between files, between audio
blocks), so Cancel takes effect at the next step and the job still returns a proper result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from engine.core.audio import SAMPLE_RATE, load_audio
from engine.core.errors import EmptyLibraryError, NfpError, NoInputDeviceError
from engine.core.mic import input_devices, record_blocks
from engine.library.library import IndexProgress, IndexSummary, Library
from engine.library.rebuild import rebuilding
from engine.library.tracks import Track
from engine.model.fingerprint import Fingerprinter
from engine.query.recognize import TracklistEntry
from engine.query.search import Match
from engine.query.stream import LiveMatcher, LiveState
from nfp_desktop.formatting import estimate_eta_s, format_eta
from nfp_desktop.preferences import pick_device
from nfp_desktop.session import LibrarySession

log = logging.getLogger(__name__)

Job = Callable[[Callable[[], bool]], Generator[Any, None, Any]]
LONG_FILE_S = 30.0  # files longer than this get a track list instead of a single answer
ONE_SHOT_LIMIT_S = 15.0  # a single Listen gives up after this much audio without a match
MISSING_FOLDER = "not a folder (moved, deleted or on a drive that is not mounted?)"


class GeneratorWorker(QThread):
    """Runs a job in a thread: `progressed` per yield, then `succeeded` or `failed` (the error)."""

    progressed = Signal(object)
    succeeded = Signal(object)
    failed = Signal(object)  # the exception; describe_error() turns it into the message shown

    def __init__(self, job: Job, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._job = job
        self._stop = threading.Event()

    def cancel(self) -> None:
        self._stop.set()

    def is_cancelled(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        try:
            result = self._drive(self._job(self.is_cancelled))
        except NfpError as e:
            self.failed.emit(e)
        except Exception as e:  # a bug in a job must end the job with a message, not the app
            log.exception("background job failed")
            self.failed.emit(e)
        else:
            self.succeeded.emit(result)

    def _drive(self, steps: Generator[Any, None, Any]) -> Any:
        while True:
            try:
                step = next(steps)
            except StopIteration as done:
                return done.value
            self.progressed.emit(step)


def describe_error(error: BaseException) -> str:
    """The message a user sees: the engine's own, with what to do about it in this app."""
    if isinstance(error, EmptyLibraryError):
        return f"{error}. Here: add a music folder in the Library tab."
    if isinstance(error, NfpError):
        return str(error)
    return f"Unexpected error ({type(error).__name__}: {error}); details are in the log."


# ---- indexing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexStep:
    folder_no: int  # 1-based
    n_folders: int
    progress: IndexProgress


@dataclass
class IndexOutcome:
    summary: IndexSummary
    tracks: list[Track] = field(default_factory=list)  # the library's tracks after the run
    rebuilt: bool = False


def index_job(
    session: LibrarySession, checkpoint_path: Path, folders: list[str], *, rebuild: bool = False
) -> Job:
    """Index (or update) every folder; with rebuild, into a new library beside the old one that
    replaces it only when complete (engine.library.rebuild.rebuilding), while the old one keeps
    serving."""

    def run(should_stop: Callable[[], bool]) -> Generator[IndexStep, None, IndexOutcome]:
        checkpoint = session.checkpoint(checkpoint_path)
        fingerprinter = session.fingerprinter(checkpoint)
        if not rebuild:
            library = session.library()
            library.check_checkpoint(checkpoint)
            library.remember_checkpoint_path(checkpoint.path)
            total = yield from _index_folders(library, fingerprinter, folders, should_stop)
            return IndexOutcome(total, library.tracks())
        with rebuilding(session.db_dir) as staged:
            staged.library.remember_checkpoint_path(checkpoint.path)
            total = yield from _index_folders(staged.library, fingerprinter, folders, should_stop)
            if total.cancelled:
                staged.cancel()
            tracks = staged.library.tracks()
        return IndexOutcome(total, tracks, rebuilt=True)

    return run


def _index_folders(
    library: Library,
    fingerprinter: Fingerprinter,
    folders: list[str],
    should_stop: Callable[[], bool],
) -> Generator[IndexStep, None, IndexSummary]:
    total = IndexSummary()
    for no, folder in enumerate(folders, start=1):
        if not Path(folder).is_dir():  # one missing folder is reported; the others still count
            total.skipped.append((folder, MISSING_FOLDER))
            continue
        update = library.update(folder, fingerprinter, should_stop=should_stop)
        summary = yield from _steps(no, len(folders), update)
        _add_summary(total, summary)
        if summary.cancelled:
            break
    return total


def _steps(
    folder_no: int, n_folders: int, update: Generator[IndexProgress, None, IndexSummary]
) -> Generator[IndexStep, None, IndexSummary]:
    while True:
        try:
            step = next(update)
        except StopIteration as done:
            return done.value
        yield IndexStep(folder_no, n_folders, step)


def _add_summary(total: IndexSummary, part: IndexSummary) -> None:
    total.indexed += part.indexed
    total.unchanged += part.unchanged
    total.removed += part.removed
    total.moved += part.moved
    total.skipped += part.skipped
    total.audio_s += part.audio_s
    total.elapsed_s += part.elapsed_s
    total.cancelled = total.cancelled or part.cancelled


# ---- listening ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceOpened:
    name: str
    notice: str  # why another device than the saved one is used, or ""


def listen_job(session: LibrarySession, device_name: str, *, continuous: bool) -> Job:
    """Microphone → LiveMatcher: yields DeviceOpened, then a LiveState per audio block (~100 ms).

    Without `continuous` it returns after the first match or ONE_SHOT_LIMIT_S without one.
    Raises NoInputDeviceError when there is no device or it stops delivering audio.
    """

    def run(should_stop: Callable[[], bool]) -> Generator[object, None, LiveState | None]:
        matcher = LiveMatcher(session.recognizer())
        device, notice = pick_device(device_name, input_devices())
        blocks = record_blocks(device)
        yield DeviceOpened(device.name, notice)
        state = None
        try:
            for block, rate in blocks:
                if should_stop():
                    break
                state = matcher.push(block, rate)
                yield state
                if not continuous and (state.match or state.heard_s >= ONE_SHOT_LIMIT_S):
                    break
        except NoInputDeviceError:
            if not should_stop():  # a device that stalls after Stop was pressed is no news
                raise
        finally:
            blocks.close()  # closes the audio stream now, not when garbage collected
        return state

    return run


# ---- files ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileResult:
    path: Path
    duration_s: float
    match: Match | None = None  # for a short file
    tracklist: list[TracklistEntry] | None = None  # for a long one
    cancelled: bool = False  # a long one's track list was stopped by the user


def identify_job(session: LibrarySession, path: Path) -> Job:
    """A file → its match, or for a long recording its track list. Yields (what, detail) lines
    for the card; a track list reports its progress with the time left and can be stopped."""

    def run(should_stop: Callable[[], bool]) -> Generator[tuple[str, str], None, FileResult]:
        yield f"Reading {path.name}…", ""
        audio = load_audio(path)
        recognizer = session.recognizer()
        duration_s = len(audio) / SAMPLE_RATE
        if duration_s <= LONG_FILE_S:
            yield f"Identifying {path.name}…", ""
            return FileResult(path, duration_s, match=recognizer.identify(audio))
        title = f"Listing the tracks in {path.name} ({duration_s / 60:.0f} min)…"
        steps, started = recognizer.tracklist_steps(audio), time.monotonic()
        while True:
            try:
                done = next(steps)
            except StopIteration as finished:
                return FileResult(path, duration_s, tracklist=finished.value)
            if should_stop():
                return FileResult(path, duration_s, cancelled=True)
            left = format_eta(estimate_eta_s(time.monotonic() - started, done, 1.0))
            yield title, f"{done:.0%} done, {left} · Cancel stops it"

    return run
