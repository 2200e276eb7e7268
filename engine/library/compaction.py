"""Rewriting a library's rows into a new generation of row files: without the rows of removed
tracks once they are a large share, and as 8× smaller product-quantisation codes once the
library outgrows exact search (docs/architecture.md, The library's files). The switch is one
transaction; a crash before it leaves the old generation current."""

from __future__ import annotations

from engine.library.index import FLAT_MAX_VECTORS
from engine.library.integrity import rows_digest
from engine.library.library import Library
from engine.library.store import VectorStore, train_codec
from engine.library.tracks import Snapshot

COMPACT_DEAD_FRACTION = 0.25  # rewrite the rows once a quarter of them belong to no track


def compact_if_due(library: Library, *, force: bool = False) -> bool:
    """Rewrite the rows when it pays, or with `force` (damaged rows that a repair left behind
    must leave the search index); whether they were rewritten."""
    snapshot = library.db.snapshot()  # under the write lock: only this library changes it
    old, committed = library.store(snapshot.records), snapshot.records.committed_rows
    live = sum(t.n_segments for t in snapshot.tracks)
    compress = old.codec is None and live > FLAT_MAX_VECTORS
    compact = committed - live > COMPACT_DEAD_FRACTION * max(committed, 1)
    if not (compress or compact or force):
        return False
    with library.changing():
        _rewrite_rows(library, old, snapshot, compress=compress)
    return True


def _rewrite_rows(
    library: Library, old: VectorStore, snapshot: Snapshot, *, compress: bool
) -> None:
    """Copy the tracks' rows into the next generation (as codes with `compress`), switch the
    records to it, then remove the generations it replaces (a staged library's own only)."""
    tracks, records = snapshot.tracks, snapshot.records
    committed, generation = records.committed_rows, records.generation + 1
    codec = train_codec(old.read(committed)) if compress else old.codec
    new = library.files.new_store(generation, records.d or 0, codec)
    raw = old.raw(committed)
    moved = []
    for t in tracks:
        rows = raw[t.first_segment : t.first_segment + t.n_segments]
        rows = new.encode(rows) if compress else rows
        moved.append((new.append_raw(rows), rows_digest(rows), t.id))
    with library.db.transaction():
        library.db.set_first_segments((first, track_id) for first, _, track_id in moved)
        library.db.set_rows_hashes((digest, track_id) for _, digest, track_id in moved)
        library.db.set_meta(generation=str(generation),
                            committed_rows=str(sum(t.n_segments for t in tracks)),
                            codec="pq" if new.codec is not None else "")  # fmt: skip
    del raw  # the old rows' mapping, before their files go
    staged_from = library.staged_from
    among = None if staged_from is None else range(staged_from, generation)
    library.files.remove_generations(keep=generation, among=among)
