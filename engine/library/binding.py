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
from engine.library.tracks import LIBRARY_FORMAT, Records
from engine.model.checkpoint import Checkpoint, default_checkpoint_path, shipped_checkpoints
from engine.model.load import load_checkpoint

log = logging.getLogger(__name__)


def built_by(library: Library, checkpoint: Checkpoint) -> bool | None:
    """Whether the library's fingerprints are the checkpoint's; None before the first track."""
    return _built_by(library.db.records(checked=False), checkpoint)


def _built_by(records: Records, checkpoint: Checkpoint) -> bool | None:
    if records.fingerprints_sha256 is not None:
        return records.fingerprints_sha256 == checkpoint.weights_sha256
    file = records.checkpoint_sha256  # a library made before weights were recorded
    return None if file is None else file == checkpoint.sha256


def superseded_folders(library: Library, checkpoint: Checkpoint) -> tuple[str, ...] | None:
    """The music folders of a library made by an earlier release of this checkpoint (the same
    file name, other weights: an upgrade of the shipped model), which indexing makes again with
    the new weights; None for any other library."""
    records = library.db.records(checked=False)
    return records.folders if _earlier_release(records, checkpoint) else None


def _earlier_release(records: Records, checkpoint: Checkpoint) -> bool:
    """Whether the library's rows were made by other weights under this checkpoint's name."""
    same_name = records.checkpoint_name == checkpoint.path.name
    return same_name and _built_by(records, checkpoint) is False


def check_checkpoint(library: Library, checkpoint: Checkpoint) -> Records:
    """The library's records, read once, if the library was built by this checkpoint's weights:
    else IndexMismatchError, and IndexCorruptError if a record is damaged or its record of d is
    not the checkpoint's (rows would be read at the wrong width, and a repair would store
    garbage)."""
    records = library.db.records(checked=False)  # a damaged one is refused after a mismatch
    if _built_by(records, checkpoint) is False:
        name = records.checkpoint_name
        if name is None:
            name = "another checkpoint"
        elif _earlier_release(records, checkpoint):
            name = f"an earlier {name} (other weights)"
        raise IndexMismatchError(
            library.db_dir, f"its fingerprints were made by {name}, not by {checkpoint.path}",
            _rebuild(library, records),
        )  # fmt: skip
    if records.damage:
        raise IndexCorruptError(library.db_dir, records.damage)
    if records.d is not None and records.d != checkpoint.d:
        cause = f"record d={records.d} is not its checkpoint's d={checkpoint.d}"
        raise IndexCorruptError(library.db_dir, cause, _rebuild(library, records))
    return records


def _rebuild(library: Library, records: Records) -> str | None:
    """The command that rebuilds the library from its folders (None where none is recorded)."""
    return library.repair_command(rebuild=True, folders=records.folders) or None


def bind(library: Library, checkpoint: Checkpoint) -> None:
    """Check the checkpoint against the library, and record it as the library's own if the
    library has no track yet (its rows then start at the library's own first generation)."""
    if _built_by(check_checkpoint(library, checkpoint), checkpoint) is None:
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
    records = library.db.records(checked=False)
    recorded = records.checkpoint_path
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
        if _built_by(records, checkpoint) is not False:
            return checkpoint
    return load_checkpoint(default_checkpoint_path())
