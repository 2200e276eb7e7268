"""Whether a library's stored rows are the ones its records describe: each track's checksum of
its rows, unit norms, and what a writer may cut off after a crash (docs/architecture.md, The
library's files). Functions over rows as stored and the track database; engine.library.library
calls them."""

from __future__ import annotations

import numpy as np

from engine.library.store import VectorStore, rows_digest
from engine.library.tracks import Track, TrackDB

UNIT_NORM_TOLERANCE = 1e-2  # stored float32 rows are unit vectors; damaged bytes are not
# Bytes of rows whose checksums a reader verifies when it loads a library (all of them up to
# here: ≈ 0.1 s; beyond, evenly spread tracks of this many bytes): rows swapped with another
# library's are unit vectors too, and only the checksums tell them apart.
LOAD_CHECK_BYTES = 256 << 20


def track_digest(raw: np.ndarray, track: Track) -> str:
    """The checksum of a track's rows, raw (n, …) as stored."""
    return rows_digest(raw[track.first_segment : track.first_segment + track.n_segments])


def damaged_tracks(raw: np.ndarray, tracks: list[Track], hashes: dict[int, str]) -> list[Track]:
    """The tracks whose rows lie past the end of raw or no longer match their checksum
    (track id → checksum; a track stored before checksums were kept has none)."""
    return [
        t
        for t in tracks
        if t.first_segment + t.n_segments > len(raw)
        or (hashes.get(t.id) and track_digest(raw, t) != hashes[t.id])
    ]


def spread_sample(tracks: list[Track], rows_bytes: int, sample_bytes: int) -> list[Track]:
    """Evenly spread tracks holding about sample_bytes of the rows_bytes stored, and the last."""
    if not tracks:
        return tracks
    every = max(1, rows_bytes // max(sample_bytes, 1))
    return tracks[::every] + tracks[-1:]


def non_unit_rows(vectors: np.ndarray) -> int:
    """How many float32 rows (n, d) are not unit vectors: damaged bytes (cheap: one pass)."""
    norms = np.einsum("nd,nd->n", vectors, vectors)
    return int((~(np.abs(norms - 1.0) <= 2 * UNIT_NORM_TOLERANCE)).sum())


def recover_rows(store: VectorStore, db: TrackDB, committed_rows: int) -> None:
    """A writer's clean-up of the rows after a crash: rows past the committed count are cut off,
    and tracks stored before checksums were kept get theirs. Only where the last committed
    track's rows match its checksum as the records place them: otherwise the records disagree
    with the rows (a tampered record of d or committed_rows would have good rows cut off or
    rewritten), which a reader reports, and nothing is cut."""
    tracks, hashes = db.tracks(), db.rows_hashes()
    if not _last_track_intact(store.raw(committed_rows), tracks, hashes):
        return
    store.truncate(committed_rows)
    missing = [t for t in tracks if not hashes.get(t.id)]
    if missing and len(store) >= committed_rows:
        raw = store.raw(committed_rows)
        with db.transaction():
            db.set_rows_hashes((track_digest(raw, t), t.id) for t in missing)


def _last_track_intact(raw: np.ndarray, tracks: list[Track], hashes: dict[int, str]) -> bool:
    if not tracks:
        return True
    last = max(tracks, key=lambda t: t.first_segment + t.n_segments)
    if last.first_segment + last.n_segments > len(raw):
        return False
    return not hashes.get(last.id) or track_digest(raw, last) == hashes[last.id]
