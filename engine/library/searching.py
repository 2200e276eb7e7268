"""A library's search index: the faiss index over its rows, the row → track map and the tracks,
loaded once per change of the library (docs/architecture.md, Search). Loading checks the rows
first, so damaged ones are reported with their repair instead of answering wrongly."""

from __future__ import annotations

import numpy as np

from engine.core.errors import EmptyLibraryError
from engine.library.index import VectorIndex, open_index
from engine.library.integrity import LOAD_CHECK_BYTES, non_unit_rows
from engine.library.library import Library
from engine.library.segments import SegmentMap
from engine.library.tracks import Track


def search_index(library: Library) -> tuple[VectorIndex, SegmentMap, list[Track]]:
    """The faiss index, the row → track map and the tracks, loaded once and kept with the
    library until its tracks or rows change."""
    if library.searched is None:
        tracks = library.tracks()
        if not tracks or not library.d:
            raise EmptyLibraryError(library.db_dir)
        index = _load_or_build_index(library)
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
    if len(library):
        _load_or_build_index(library)


def _load_or_build_index(library: Library) -> VectorIndex:
    store, committed = library.store(), library.committed_rows
    vectors = store.read(committed)
    if len(vectors) != committed:
        raise library.damaged_error("stored fingerprints are missing (fewer than the tracks need)")
    bad = 0 if store.codec is not None else non_unit_rows(vectors)
    if bad:
        raise library.damaged_error(f"{bad} stored fingerprints are damaged (not unit vectors)")
    library.check_rows(sample_bytes=LOAD_CHECK_BYTES)
    return open_index(library.db_dir, vectors, store.path.name, save=library.files.writable)
