"""Which checkpoint a library belongs to: its rows are one checkpoint's fingerprints, so it is
bound to that checkpoint's weights (not its file, whose calibration may be renewed) and refuses
any other (IndexMismatchError: re-index). The library records the binding with its first track,
and where the checkpoint lives, to find it again for queries."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from engine.core.errors import CheckpointError, IndexCorruptError, IndexMismatchError
from engine.library.library import Library
from engine.library.tracks import LIBRARY_FORMAT
from engine.model.checkpoint import Checkpoint, default_checkpoint_path, shipped_checkpoints
from engine.model.load import load_checkpoint

log = logging.getLogger(__name__)


def built_by(library: Library, checkpoint: Checkpoint) -> bool | None:
    """Whether the library's fingerprints are the checkpoint's; None before the first track."""
    weights = library.meta("fingerprints_sha256")
    if weights is not None:
        return weights == checkpoint.weights_sha256
    file = library.meta("checkpoint_sha256")  # a library made before weights were recorded
    return None if file is None else file == checkpoint.sha256


def check_checkpoint(library: Library, checkpoint: Checkpoint) -> None:
    """Raise IndexMismatchError unless the library was built by this checkpoint's weights, and
    IndexCorruptError if its record of d is not theirs (rows would be read at the wrong width,
    and a repair would store garbage)."""
    repair = library.repair_command(rebuild=True) or None
    if built_by(library, checkpoint) is False:
        name = library.meta("checkpoint_name", "another checkpoint")
        raise IndexMismatchError(
            library.db_dir, f"its fingerprints were made by {name}, not by {checkpoint.path}",
            repair,
        )  # fmt: skip
    d = library.d
    if d is not None and d != checkpoint.d:
        cause = f"record d={d} is not its checkpoint's d={checkpoint.d}"
        raise IndexCorruptError(library.db_dir, cause, repair)


def bind(library: Library, checkpoint: Checkpoint) -> None:
    """Check the checkpoint against the library, and record it as the library's own if the
    library has no track yet (its rows then start at the library's own first generation)."""
    check_checkpoint(library, checkpoint)
    if built_by(library, checkpoint) is None:
        with library.db.transaction():
            library.db.set_meta(
                format=str(LIBRARY_FORMAT),
                checkpoint_sha256=checkpoint.sha256,
                fingerprints_sha256=checkpoint.weights_sha256,
                checkpoint_name=checkpoint.path.name,
                encoder=json.dumps(checkpoint.config.to_dict()),
                d=str(checkpoint.d),
                committed_rows="0",
                generation=str(library.staged_from or 0),
            )


def remember_checkpoint_path(library: Library, path: Path) -> None:
    """Where the checkpoint that built the library lives, to find it again for queries."""
    with library.db.transaction():
        library.db.set_meta(checkpoint_path=str(Path(path).resolve()))


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
        if built_by(library, checkpoint) is not False:
            return checkpoint
    return load_checkpoint(default_checkpoint_path())
