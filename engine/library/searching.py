"""A library's search index: the faiss index over its rows, the row → track map and the tracks,
loaded once per change of the library (docs/architecture.md, Search). Loading reads one
snapshot of the track database (the records, the tracks and their checksums, of one moment) and
checks the rows against it first, so damaged ones are reported with their repair instead of
answering wrongly."""

from __future__ import annotations

import numpy as np

from engine.core.errors import EmptyLibraryError
from engine.core.stamps import is_verified, remember_verified
from engine.library.index import VectorIndex, open_index
from engine.library.integrity import LOAD_CHECK_BYTES, rows_damage, rows_stamp
from engine.library.library import Library
from engine.library.segments import SegmentMap
from engine.library.tracks import Snapshot, Track


def search_index(library: Library) -> tuple[VectorIndex, SegmentMap, list[Track]]:
    """The faiss index, the row → track map and the tracks, loaded once and kept with the
    library until its tracks or rows change."""
    if library.searched is None:
        snapshot = library.db.snapshot()
        tracks = snapshot.tracks
        if not tracks or not snapshot.records.d:
            raise EmptyLibraryError(library.db_dir)
        index = _load_or_build_index(library, snapshot)
        first = np.array([t.first_segment for t in tracks])
        length = np.array([t.n_segments for t in tracks])
        if (first + length).max() > len(index.vectors):
            raise library.damaged_error("tracks name rows past the end of the stored fingerprints")
        segments = SegmentMap.from_tracks(first, length, len(index.vectors))
        library.searched = (index, segments, tracks)
    return library.searched


def refresh_search_index(library: Library) -> None:
    """Bring the saved search index up to date (called at the end of indexing)."""
    library.searched = None
    snapshot = library.db.snapshot()
    if snapshot.tracks:
        _load_or_build_index(library, snapshot)


def _load_or_build_index(library: Library, snapshot: Snapshot) -> VectorIndex:
    """The index over the snapshot's committed rows, once they are checked against it: all
    there, float32 ones unit vectors, the checksums of (evenly spread) tracks matching; a check
    passed is remembered until the rows file or the snapshot changes (rows_stamp)."""
    store = library.store(snapshot.records)
    vectors = store.read(snapshot.records.committed_rows)
    stamp = rows_stamp(store.path, snapshot)
    if stamp is None or not is_verified(stamp):
        cause = rows_damage(vectors, snapshot, unit_norms=True, sample_bytes=LOAD_CHECK_BYTES)
        if cause:
            raise library.damaged_error(cause)
        if stamp is not None:
            remember_verified(stamp)
    return open_index(library.db_dir, vectors, store.path.name, save=library.files.writable)
