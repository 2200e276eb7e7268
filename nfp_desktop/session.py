"""The open library and what is loaded from it, shared by the GUI and its workers.

One Library object per library directory for the whole app: opening a second one on the same
directory while a worker indexes would cut off the rows it is writing (Library drops uncommitted
vectors when opened). The recognizer is built once in a worker and cached until the index changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

from engine.api import (
    Checkpoint,
    Fingerprinter,
    Library,
    Recognizer,
    Track,
    library_exists,
    load_checkpoint,
    open_recognizer,
)


class LibrarySession:
    def __init__(self, db_dir: Path, precision: str = "auto") -> None:
        self.db_dir = Path(db_dir)
        self.precision = precision  # the encoder's numeric path (engine.model.fingerprint)
        self._lock = threading.Lock()  # guards the cached objects: workers and the GUI share them
        self._library: Library | None = None
        self._recognizer: Recognizer | None = None
        self._checkpoints: dict[Path, Checkpoint] = {}

    def exists(self) -> bool:
        return library_exists(self.db_dir)

    def library(self) -> Library:
        """The library (created on first use). Raises IndexCorruptError for a damaged store."""
        with self._lock:
            if self._library is None:
                self._library = Library(self.db_dir)
            return self._library

    def tracks(self) -> list[Track]:
        return self.library().tracks() if self.exists() else []

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of the files indexing skipped, as the library keeps them."""
        return self.library().skipped() if self.exists() else []

    def info(self) -> dict | None:
        return self.library().info() if self.exists() else None

    def checkpoint(self, path: Path) -> Checkpoint:
        """A checkpoint, loaded once per session (loading the full-width model takes a second)."""
        key = Path(path).resolve()
        with self._lock:
            if key not in self._checkpoints:
                self._checkpoints[key] = load_checkpoint(key)
            return self._checkpoints[key]

    def recognizer(self) -> Recognizer:
        """The library opened for search with the checkpoint that built it (call from a worker).

        Raises EmptyLibraryError, IndexMismatchError, IndexCorruptError or CheckpointError.
        """
        library = self.library()
        with self._lock:
            if self._recognizer is None:
                self._recognizer = open_recognizer(library, precision=self.precision)
            return self._recognizer

    def use_precision(self, precision: str) -> None:
        """Run the encoder on another numeric path from the next search and indexing run on;
        work already running keeps its own (nothing is closed under a worker)."""
        with self._lock:
            self.precision = precision
            self._recognizer = None

    def fingerprinter(self, checkpoint: Checkpoint) -> Fingerprinter:
        return Fingerprinter(checkpoint, precision=self.precision)

    def index_changed(self) -> None:
        """Forget the recognizer: the next search sees the new tracks."""
        with self._lock:
            self._recognizer = None

    def close(self) -> None:
        with self._lock:
            if self._library is not None:
                self._library.close()
            self._library = None
            self._recognizer = None
