"""The engine's front door: what the `nfp` command, the app and the benchmarks use.

    library = Library(db_dir)  # opens the library there, or makes a new one
    checkpoint = load_checkpoint(default_checkpoint_path())
    summary = run_steps(index_folders(library, [folder], Fingerprinter(checkpoint)), print)
    recognizer = open_recognizer(library)  # with the checkpoint that built it
    match = identify(recognizer, "clip.ogg")  # a Match, or None
    entries = run_steps(tracklist(recognizer, "mix.ogg"))  # which tracks play when
    for state in listen(recognizer, record_blocks(device)): ...  # a LiveState per block

Long work is a generator of progress records that returns its result (run_steps drives one;
Steps keeps the result of a for-loop over one). The types these return, the errors they raise
and the few facts a caller needs (sample rate, checkpoints, input devices) are importable from
here too; everything below is the engine's own (docs/architecture.md, The layers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from platformdirs import user_data_dir

from engine.core.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio
from engine.core.errors import (
    CheckpointError,
    EmptyLibraryError,
    IndexCorruptError,
    IndexMismatchError,
    NfpError,
    NoInputDeviceError,
)
from engine.core.mic import InputDevice, input_devices, record_blocks, resolve_device
from engine.core.steps import Steps, run_steps
from engine.core.threads import apply_thread_policy
from engine.library.binding import (
    built_by,
    check_checkpoint,
    checkpoint_for_library,
    superseded_folders,
)
from engine.library.indexing import (
    MISSING_FOLDER,
    IndexProgress,
    IndexSummary,
    index_folders,
    music_folder,
    remove_folder,
)
from engine.library.library import Library
from engine.library.parallel import FingerprintSource, connect, dask_source
from engine.library.rebuild import read_library, rebuild_library
from engine.library.scan import display_path, printable
from engine.library.store import remove_library
from engine.library.tracks import DB_FILE, Track
from engine.model.checkpoint import (
    DEFAULT_CHECKPOINT,
    Checkpoint,
    default_checkpoint_path,
    shipped_checkpoints,
)
from engine.model.fingerprint import Fingerprinter, check_reference
from engine.model.load import load_checkpoint, pt_backend, read_config
from engine.model.onnx_backend import has_int8_twin
from engine.model.precision import PRECISIONS
from engine.query.recognize import Recognizer, TracklistEntry
from engine.query.search import Match
from engine.query.shards import Catalogue, read_catalogue
from engine.query.stream import LiveMatcher, LiveState
from engine.selftest import run_self_test

__all__ = [  # noqa: RUF022 (grouped by what a caller does, not sorted)
    # a library: opening, indexing, what is in it, removing it
    "Library", "library_exists", "default_db_dir", "read_library", "library_info", "Track",
    "music_folder", "index_folders", "rebuild_library", "remove_folder", "remove_library",
    "MISSING_FOLDER", "IndexProgress", "IndexSummary", "fingerprint_source", "Fingerprinter",
    "FingerprintSource",
    # checkpoints: which one a library belongs to, the shipped ones, their numeric paths
    "Checkpoint", "checkpoint_for_index", "check_checkpoint", "built_by", "load_checkpoint",
    "superseded_folders",
    "read_config", "default_checkpoint_path", "shipped_checkpoints", "DEFAULT_CHECKPOINT",
    "PRECISIONS", "fast_precision",
    # identifying: files, recordings, live input
    "open_recognizer", "read_catalogue", "Recognizer", "identify", "Match", "tracklist",
    "TracklistEntry", "listen", "LiveState", "load_audio", "SAMPLE_RATE",
    "AUDIO_EXTENSIONS", "InputDevice", "input_devices", "record_blocks", "resolve_device",
    # long work, errors, and the rest a caller needs
    "Steps", "run_steps", "NfpError", "CheckpointError", "EmptyLibraryError",
    "IndexCorruptError", "IndexMismatchError", "NoInputDeviceError", "apply_thread_policy",
    "printable", "display_path", "run_self_test",
]  # fmt: skip


def default_db_dir() -> Path:
    """The per-user library directory (e.g. ~/.local/share/nfp/library on Linux)."""
    return Path(user_data_dir("nfp", appauthor=False)) / "library"


def library_exists(db_dir: str | Path) -> bool:
    """Whether db_dir holds a library (opening one for writing would create it)."""
    return (Path(db_dir) / DB_FILE).is_file()


def checkpoint_for_index(db_dir: Path, explicit: Path | None = None) -> Checkpoint:
    """The checkpoint to index db_dir with: the explicit one, else the one the library was
    built with if it can still be read (a damaged library is rebuilt without being read), else
    the shipped default."""
    if explicit is not None:
        return load_checkpoint(explicit)
    try:
        with Library(db_dir, writable=False) as library:
            return checkpoint_for_library(library)
    except NfpError:
        return load_checkpoint(default_checkpoint_path())


@contextlib.contextmanager
def fingerprint_source(
    checkpoint: Checkpoint,
    *,
    precision: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> Iterator[Fingerprinter | FingerprintSource]:
    """What makes the fingerprints for indexing: a Fingerprinter in this process, or Dask
    workers with `workers` (local processes) or `scheduler` (a cluster's address), started
    here and closed when the block ends."""
    if workers is None and scheduler is None:
        yield Fingerprinter(checkpoint, precision=precision)
        return
    with dask_source(checkpoint, workers=workers, address=scheduler) as source:
        yield source


def open_recognizer(
    libraries: Library | Sequence[Path],
    *,
    checkpoint: Path | None = None,
    precision: str | None = None,
    scheduler: str | None = None,
) -> Recognizer:
    """A library, or library directories searched as one catalogue (held by the workers of the
    Dask cluster at `scheduler`), opened for search with the checkpoint that built them (or
    `checkpoint`). Raises EmptyLibraryError, IndexMismatchError, IndexCorruptError or
    CheckpointError."""
    if isinstance(libraries, Library):
        found = checkpoint_for_library(libraries, checkpoint)
        return Recognizer(libraries, found, precision=precision)
    first = Library(Path(libraries[0]).expanduser(), writable=False)
    if len(libraries) == 1 and not scheduler:
        return open_recognizer(first, checkpoint=checkpoint, precision=precision)
    with first:
        found = checkpoint_for_library(first, checkpoint)
    client = connect(scheduler) if scheduler else None
    catalogue = Catalogue.open(libraries, found, client=client)
    return Recognizer(catalogue, found, precision=precision)


def identify(recognizer: Recognizer, query: str | Path | np.ndarray) -> Match | None:
    """A file, or its audio float32 (n,) at SAMPLE_RATE, → a confident Match or None."""
    return recognizer.identify(_audio(query))


def tracklist(
    recognizer: Recognizer, query: str | Path | np.ndarray
) -> Generator[float, None, list[TracklistEntry]]:
    """A long recording (a file, or its audio) → which tracks play when, in order; yields the
    share done (0…1) as it goes."""
    return recognizer.tracklist_steps(_audio(query))


def listen(recognizer: Recognizer, blocks: Iterable[tuple[np.ndarray, int]]) -> Iterator[LiveState]:
    """Live identification: a LiveState after each block of audio (float32 (n,) or (n,
    channels) at its rate in Hz), from an input device's record_blocks or any other source."""
    matcher = LiveMatcher(recognizer)
    for block, rate in blocks:
        yield matcher.push(block, rate)


def library_info(library: Library) -> dict:
    """What `nfp info` reports: what is in the library, how many tracks are damaged and files
    skipped, and how this machine runs the checkpoint that built it (backend, numeric path,
    whether its fingerprints are the checkpoint's reference ones)."""
    checkpoint = checkpoint_for_library(library)
    check_checkpoint(library, checkpoint)  # identify's refusals are info's too
    info = library.info()
    info["damaged_tracks"] = len(library.damaged_tracks())
    info["skipped_files"] = len(library.skipped())
    fingerprinter = Fingerprinter(checkpoint)
    info["backend"] = fingerprinter.checkpoint.backend
    info["precision"] = fingerprinter.precision.to_json()
    info["reference"] = check_reference(fingerprinter)
    return info


def fast_precision(checkpoint: Path | None) -> str | None:
    """The faster numeric path a checkpoint may take here, if any: bfloat16 where a .pt runs on
    torch, int8 where an int8 twin sits beside its export (engine.model.precision)."""
    if pt_backend() == "torch":
        return "bfloat16"
    return "int8" if checkpoint is not None and has_int8_twin(checkpoint) else None


def _audio(query: str | Path | np.ndarray) -> np.ndarray:
    return load_audio(query) if isinstance(query, str | Path) else query
