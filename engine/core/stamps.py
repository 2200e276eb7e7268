"""Checks already passed, remembered between processes as stamps in the user's cache.

A stamp is a small JSON record naming everything that decides a check's answer (a file's
contents or identity, versions, this CPU); its file name is the record's hash. It is trusted
only when it reads back as exactly what would be written: a missing, damaged or foreign one
means "not verified", and a cache that cannot be written costs only the time to check again.
engine.model.verified makes the records of exports; engine.library.integrity those of a
library's rows.
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

Stamp = dict[str, str | int]


def stamp_dir() -> Path:
    """Where stamps are kept (per user, beside the cached exports)."""
    return platformdirs.user_cache_path("nfp") / "verified"


def stamp_path(record: Stamp) -> Path:
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    return stamp_dir() / f"{key[:32]}.json"


def is_verified(record: Stamp) -> bool:
    """Whether a stamp of exactly `record` is on disk (anything unreadable is not one)."""
    try:
        return json.loads(stamp_path(record).read_text()) == record
    except (OSError, ValueError):
        return False


def remember_verified(record: Stamp) -> None:
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
