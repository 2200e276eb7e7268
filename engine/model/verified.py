"""Exports already verified against their .pt, remembered between processes.

Verifying an export (engine.model.onnx_backend.verify_export: the .pt read without torch, every
piece of metadata compared, the probe run through the network) took 0.09–0.12 s of the 0.5 s
that `nfp identify` takes on a 2-core AMD EPYC, on every run, for the same two files. A stamp
records that one pair of file contents (SHA-256 of the export's bytes and of the .pt's) passed
on this ONNX Runtime version; any change to either file is another pair, which is verified
again. A stamp is trusted only when it reads back as exactly what would be written: a missing,
damaged or foreign one means "not verified", and a cache that cannot be written costs only the
time to verify again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

STAMP_VERSION = 1  # what a stamp asserts; a new meaning gets a new number


def stamp_dir() -> Path:
    """Where stamps are kept (per user, beside the cached exports)."""
    return platformdirs.user_cache_path("nfp") / "verified"


def stamp(export_sha256: str, source_sha256: str, runtime_version: str) -> dict[str, str | int]:
    """What a stamp of this export, .pt and ONNX Runtime version holds."""
    return {"version": STAMP_VERSION, "export_sha256": export_sha256,
            "source_sha256": source_sha256, "onnxruntime": runtime_version}  # fmt: skip


def stamp_path(record: dict[str, str | int]) -> Path:
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    return stamp_dir() / f"{key[:32]}.json"


def is_verified(record: dict[str, str | int]) -> bool:
    """Whether a stamp of exactly `record` is on disk (anything unreadable is not one)."""
    try:
        return json.loads(stamp_path(record).read_text()) == record
    except (OSError, ValueError):
        return False


def remember_verified(record: dict[str, str | int]) -> None:
    """Write the stamp of `record`, whole or not at all (a temporary file renamed into place,
    so a reader never sees half of one); a cache that cannot be written is logged and skipped."""
    path = stamp_path(record)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record, sort_keys=True))
        os.replace(tmp, path)
    except OSError as e:
        log.info("%s: verification not remembered (%s)", path, e)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
