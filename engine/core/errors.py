"""The engine's named errors. Each message names the file and the cause, ready to show."""

from __future__ import annotations

from pathlib import Path


class NfpError(Exception):
    """Base class: a user-facing failure with a message that stands on its own."""

    def __reduce__(self) -> tuple:
        # Subclasses take (path, cause) but hand Exception one message, so the default pickle
        # could not rebuild them; a Dask worker's error must reach the writer whole.
        return _restore, (type(self), self.args, self.__dict__)


class AudioDecodeError(NfpError):
    def __init__(self, path: str | Path, cause: str) -> None:
        super().__init__(f"{path}: cannot decode audio ({cause})")
        self.path = str(path)
        self.cause = cause


class CheckpointError(NfpError):
    def __init__(self, path: str | Path, cause: str) -> None:
        super().__init__(f"{path}: not a usable nfp checkpoint ({cause})")
        self.path = str(path)
        self.cause = cause


class IndexMismatchError(NfpError):
    """An index was built by another checkpoint than the one in use; it must be rebuilt."""

    def __init__(self, db_dir: str | Path, cause: str, repair: str | None = None) -> None:
        # A plain `nfp index` would refuse again: the rows of another checkpoint cannot be kept.
        repair = repair or f"nfp index MUSIC_FOLDER --db {db_dir} --rebuild"
        super().__init__(
            f"{db_dir}: index does not match the checkpoint ({cause}); rebuild it with: {repair}"
        )
        self.path = str(db_dir)
        self.cause = cause
        self.repair = repair


class IndexCorruptError(NfpError):
    """A library whose files are damaged; the message ends with the command that repairs it."""

    def __init__(self, db_dir: str | Path, cause: str, repair: str | None = None) -> None:
        repair = repair or f"nfp index MUSIC_FOLDER --db {db_dir} --rebuild"
        super().__init__(f"{db_dir}: the library is damaged ({cause}); repair it with: {repair}")
        self.path = str(db_dir)
        self.cause = cause
        self.repair = repair


class LibraryWriteError(NfpError):
    """The library's own files cannot be written (a full disk): the run ends there, since every
    later file would fail the same way; what was committed before stays."""

    def __init__(self, db_dir: str | Path, cause: str) -> None:
        super().__init__(f"{db_dir}: cannot write the library ({cause}); the tracks indexed "
                         "before are kept")  # fmt: skip
        self.path = str(db_dir)
        self.cause = cause


class NonFiniteError(NfpError):
    """Fingerprints with NaN or infinite values: refused at the storage boundary."""


class EmptyLibraryError(NfpError):
    def __init__(self, db_dir: str | Path) -> None:
        super().__init__(f"{db_dir}: the library is empty; index a music folder first")
        self.path = str(db_dir)


class LibraryBusyError(NfpError):
    def __init__(self, db_dir: str | Path) -> None:
        super().__init__(f"{db_dir}: another nfp is indexing this library right now")
        self.path = str(db_dir)


class NoInputDeviceError(NfpError):
    def __init__(self, cause: str) -> None:
        super().__init__(f"no audio input device ({cause})")
        self.cause = cause


def _restore(cls: type[NfpError], args: tuple, state: dict) -> NfpError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error
