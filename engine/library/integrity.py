"""Whether a library's stored rows are the ones its records describe: each track's checksum of
its rows, unit norms, and what a writer may cut off after a crash (docs/architecture.md, The
library's files). Functions over rows as stored and one snapshot of the track database
(engine.library.tracks.Snapshot), each a single pass over the rows; engine.library.library and
engine.library.searching call them."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from engine.core.stamps import Stamp
from engine.library.index import DecodedRows
from engine.library.store import VectorStore
from engine.library.tracks import Snapshot, Track, TrackDB

UNIT_NORM_TOLERANCE = 1e-2  # stored float32 rows are unit vectors; damaged bytes are not
# Bytes of rows whose checksums a reader verifies when it loads a library (all of them up to
# here: ≈ 0.1 s; beyond, evenly spread tracks of this many bytes): rows swapped with another
# library's are unit vectors too, and only the checksums tell them apart.
LOAD_CHECK_BYTES = 256 << 20
ROWS_STAMP_VERSION = 1  # what a stamp of checked rows asserts; a new meaning gets a new number
# A rows file written this recently gets no stamp: a write within the same tick of a coarse
# clock (2 s on FAT) would leave its times as stamped ("racy git").
RACY_S = 2.0


def rows_digest(raw: np.ndarray) -> str:
    """Checksum of rows as stored (float32 or codes), kept with the track that owns them."""
    return hashlib.blake2b(np.ascontiguousarray(raw).tobytes(), digest_size=16).hexdigest()


def track_digest(raw: np.ndarray, track: Track) -> str:
    """The checksum of a track's rows, raw (n, …) as stored."""
    return rows_digest(raw[track.first_segment : track.first_segment + track.n_segments])


def rows_damage(
    rows: np.ndarray | DecodedRows,
    snapshot: Snapshot,
    *,
    unit_norms: bool = False,
    sample_bytes: int | None = None,
) -> str | None:
    """Why the committed rows (float32 (n, d), or codes read as such) are not the ones the
    snapshot's records describe, or None: rows missing, float32 rows that are not unit vectors
    (with `unit_norms`), tracks whose rows fail their checksum (with `sample_bytes`, of evenly
    spread tracks holding about that many bytes)."""
    raw = rows.codes if isinstance(rows, DecodedRows) else rows
    if len(raw) < snapshot.records.committed_rows:
        return "stored fingerprints are missing (fewer than the tracks need)"
    bad = non_unit_rows(raw) if unit_norms and raw.dtype == np.float32 else 0
    if bad:
        return f"{bad} stored fingerprints are damaged (not unit vectors)"
    damaged = damaged_tracks(rows, snapshot, sample_bytes=sample_bytes)
    if damaged:
        return (f"{len(damaged)} tracks have damaged or missing fingerprints"
                f"{' (of those checked)' if sample_bytes is not None else ''}")  # fmt: skip
    return None


def rows_stamp(path: Path, snapshot: Snapshot) -> Stamp | None:
    """What a stamp of the rows file at `path`, checked against the snapshot by rows_damage,
    holds: the file's identity and size, the times a write changes (mtime, and ctime, which
    no tool sets back), and the snapshot's records and checksums; None where the file cannot be
    read or was written too recently to tell a later write apart (RACY_S). The stamp lets a
    reader skip the check (blake2b of every row up to LOAD_CHECK_BYTES: 40 ms of each
    `nfp identify` on a 9.4 h library) until any of that changes."""
    try:
        st = path.stat()
    except OSError:
        return None
    if time.time() - max(st.st_mtime, st.st_ctime) < RACY_S:
        return None
    records = snapshot.records
    tracks = [[t.id, t.first_segment, t.n_segments, snapshot.rows_hashes.get(t.id) or ""]
              for t in snapshot.tracks]  # fmt: skip
    return {
        "version": ROWS_STAMP_VERSION, "check": "rows", "path": str(path.resolve()),
        "device": st.st_dev, "inode": st.st_ino, "size": st.st_size,
        "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
        "committed_rows": records.committed_rows, "d": records.d or 0, "codec": records.codec,
        "tracks_sha256": hashlib.sha256(json.dumps(tracks).encode()).hexdigest(),
    }  # fmt: skip


def damaged_tracks(
    rows: np.ndarray | DecodedRows, snapshot: Snapshot, *, sample_bytes: int | None = None
) -> list[Track]:
    """The snapshot's tracks (with `sample_bytes`, of evenly spread ones holding about that many
    bytes) whose rows lie past the end of the committed rows or no longer match their checksum
    (a track stored before checksums were kept has none)."""
    raw = rows.codes if isinstance(rows, DecodedRows) else rows
    tracks, hashes = snapshot.tracks, snapshot.rows_hashes
    if sample_bytes is not None:
        tracks = spread_sample(tracks, raw.nbytes, sample_bytes)
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
    """How many float32 rows (n, d) are neither unit vectors nor zero (a silent segment's:
    engine.model.fingerprint.blank_silence): damaged bytes (cheap: one pass). Zeroed bytes
    pass here; the tracks' checksums catch them."""
    norms = np.einsum("nd,nd->n", vectors, vectors)
    return int((~((np.abs(norms - 1.0) <= 2 * UNIT_NORM_TOLERANCE) | (norms == 0.0))).sum())


def recover_rows(store: VectorStore, db: TrackDB, snapshot: Snapshot) -> None:
    """A writer's clean-up of the rows after a crash (with the snapshot read under the write
    lock): rows past the committed count are cut off, and tracks stored before checksums were
    kept get theirs. Only where the last committed track's rows match its checksum as the
    records place them: otherwise the records disagree with the rows (a tampered record of d or
    committed_rows would have good rows cut off or rewritten), which a reader reports, and
    nothing is cut."""
    tracks, hashes = snapshot.tracks, snapshot.rows_hashes
    committed_rows = snapshot.records.committed_rows
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
