"""Long work off the GUI thread: a job is a generator; the worker turns its yields into signals.

A job is a callable taking `should_stop` and returning a generator. The worker drives it to the
end in its own thread; jobs poll `should_stop` between their steps (between files, between audio
blocks), so Cancel takes effect at the next step and the job still returns a proper result.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from engine.api import (
    SAMPLE_RATE,
    EmptyLibraryError,
    IndexProgress,
    IndexSummary,
    Library,
    LiveState,
    Match,
    NfpError,
    NoInputDeviceError,
    Steps,
    Track,
    TracklistEntry,
    identify,
    index_folders,
    input_devices,
    listen,
    load_audio,
    read_library,
    rebuild_library,
    record_blocks,
    run_steps,
    tracklist,
)
from nfp_desktop.formatting import estimate_eta_s, format_eta
from nfp_desktop.preferences import pick_device
from nfp_desktop.session import LibrarySession

log = logging.getLogger(__name__)

Job = Callable[[Callable[[], bool]], Generator[Any, None, Any]]
LONG_FILE_S = 30.0  # files longer than this get a track list instead of a single answer
ONE_SHOT_LIMIT_S = 15.0  # a single Listen gives up after this much audio without a match


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
            result = run_steps(self._job(self.is_cancelled), self.progressed.emit)
        except NfpError as e:
            self.failed.emit(e)
        except Exception as e:  # a bug in a job must end the job with a message, not the app
            log.exception("background job failed")
            self.failed.emit(e)
        else:
            self.succeeded.emit(result)


def describe_error(error: BaseException) -> str:
    """The message a user sees: the engine's own, with what to do about it in this app."""
    if isinstance(error, EmptyLibraryError):
        return f"{error}. Here: add a music folder in the Library tab."
    if isinstance(error, NfpError):
        return str(error)
    return f"Unexpected error ({type(error).__name__}: {error}); details are in the log."


# ---- indexing -------------------------------------------------------------------------------
@dataclass
class IndexOutcome:
    summary: IndexSummary  # every folder's, added up
    tracks: list[Track] = field(default_factory=list)  # the library's tracks after the run
    rebuilt: bool = False  # a rebuild ran (summary.replaced: it took the old library's place)


def index_job(
    session: LibrarySession, checkpoint_path: Path, folders: list[str], *, rebuild: bool = False
) -> Job:
    """Index (or update) every folder; with rebuild, into a new library beside the old one that
    replaces it only when complete (engine.library.rebuild), while the old one keeps serving.
    Yields an IndexProgress per file."""

    def run(should_stop: Callable[[], bool]) -> Generator[IndexProgress, None, IndexOutcome]:
        fingerprinter = session.fingerprinter(session.checkpoint(checkpoint_path))
        if not rebuild:
            library = session.library()
            summary = yield from index_folders(library, folders, fingerprinter,
                                               should_stop=should_stop)  # fmt: skip
            return IndexOutcome(summary, library.tracks())
        summary = yield from rebuild_library(session.db_dir, folders, fingerprinter,
                                             should_stop=should_stop)  # fmt: skip
        tracks = read_library(session.db_dir, Library.tracks) if summary.replaced else []
        return IndexOutcome(summary, tracks, rebuilt=True)

    return run


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
        recognizer = session.recognizer()
        device, notice = pick_device(device_name, input_devices())
        blocks = record_blocks(device)
        yield DeviceOpened(device.name, notice)
        state = None
        # Stop is checked as each block arrives, before it is matched.
        heard = itertools.takewhile(lambda _: not should_stop(), blocks)
        try:
            for state in listen(recognizer, heard):
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
            return FileResult(path, duration_s, match=identify(recognizer, audio))
        title = f"Listing the tracks in {path.name} ({duration_s / 60:.0f} min)…"
        steps, started = Steps(tracklist(recognizer, audio)), time.monotonic()
        for done in steps:
            if should_stop():
                return FileResult(path, duration_s, cancelled=True)
            left = format_eta(estimate_eta_s(time.monotonic() - started, done, 1.0))
            yield title, f"{done:.0%} done, {left} · Cancel stops it"
        return FileResult(path, duration_s, tracklist=steps.result)

    return run
