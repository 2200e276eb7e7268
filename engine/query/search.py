"""Sequence search: per-segment kNN → offset compensation → aligned scoring → the best match.

A pure function over arrays (`match_sequence`), so it is tested by planting a query at a known
offset in a synthetic database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.core.audio import HOP_S
from engine.library.index import DecodedRows, VectorIndex
from engine.library.segments import SegmentMap
from engine.library.tracks import Track
from engine.model.scoring import BACKGROUND_K, MIN_COVERAGE, ROOM_K, TOP_K, Scoring

CONFIDENCE_THRESHOLD = 0.5  # the app reports a match at or above this confidence
# Stored segments at least this close are the same music (engine.model.scoring.OTHER_MUSIC_FLOOR)
SAME_MUSIC = 0.9
# Evidence at which confidence is 0.5, by number of query segments, for a checkpoint the
# evaluation harness has not calibrated yet (a conservative guess, replaced by calibration).
UNCALIBRATED_THRESHOLD = {1: 0.35, 3: 0.6, 9: 1.0, 19: 1.6}


@dataclass(frozen=True)
class SequenceMatch:
    track: int  # index into the SegmentMap
    start_segment: int  # segment of the track aligned with the query's first segment
    offset_s: float  # where the query starts inside the track, refined below one hop
    score: float  # mean inner product of the aligned query and stored segments
    evidence: float  # summed margins over each segment's noise floor; grows with query length
    confidence: float  # 0…1; CONFIDENCE_THRESHOLD at the calibrated evidence threshold
    n_query_segments: int


@dataclass(frozen=True)
class Match:
    """A confident identification: which track, where in it the query starts, how sure."""

    track: Track
    offset_s: float
    score: float
    confidence: float

    def to_json(self) -> dict:
        """The `match` object of `nfp identify --json` (docs/architecture.md, The command line)."""
        return {
            "path": self.track.display_path,
            "title": self.track.title,
            "artist": self.track.artist,
            "offset_s": round(self.offset_s, 3),
            "score": round(self.score, 4),
            "confidence": round(self.confidence, 4),
        }


def evidence_threshold(n_segments: int, calibration: dict[str, Any] | None = None) -> float:
    """The evidence at which a query of n_segments is as likely library as not (confidence 0.5)."""
    table = (calibration or {}).get("evidence_threshold") or UNCALIBRATED_THRESHOLD
    lengths = np.array(sorted(int(n) for n in table), float)
    values = np.array([float(table[k]) for k in sorted(table, key=int)])
    return float(np.interp(n_segments, lengths, values))


def confidence_from_evidence(
    evidence: float, n_segments: int, calibration: dict[str, Any] | None = None
) -> float:
    """Monotone map evidence → [0, 1), equal to 0.5 at the calibrated threshold."""
    threshold = evidence_threshold(n_segments, calibration)
    return float(1.0 - 0.5 ** (max(evidence, 0.0) / threshold))


class Background:
    """Fingerprints of other music (B, d) that travel with a checkpoint, and after them
    room_rows of rooms with no music (engine.model.scoring.ROOM_ROWS), searched exactly: a query
    segment's chance similarity is the k-th best inner product among the music, or its
    room_k-th best among the rooms where that is higher. faiss finds each in one matrix product
    (engine.core.threads), faster than a product and a partition in numpy (3-4× when both ran on
    every core)."""

    def __init__(
        self, rows: np.ndarray, k: int = BACKGROUND_K, room_rows: int = 0, room_k: int = ROOM_K
    ) -> None:
        rows = np.ascontiguousarray(rows, np.float32)
        if not 0 <= room_rows <= len(rows) - k:
            raise ValueError(f"{len(rows)} background rows cannot hold {room_rows} of rooms")
        music = len(rows) - room_rows
        self.parts = [(VectorIndex.build(rows[:music], "Flat"), k)]
        if room_rows >= room_k:
            self.parts.append((VectorIndex.build(rows[music:], "Flat"), room_k))

    @classmethod
    def of(cls, rows: np.ndarray | None, scoring: Scoring) -> Background | None:
        """The background of a checkpoint's rows under a calibration's scoring, or None where
        it has fewer rows of music than the floor's k."""
        if rows is None or len(rows) - scoring.room_rows < scoring.background_k:
            return None
        return cls(rows, scoring.background_k, scoring.room_rows, scoring.room_k)

    def kth(self, query_fp: np.ndarray) -> np.ndarray:
        """Fingerprints float32 (L, d) → each one's chance similarity float32 (L,); 1.0 for a
        row that is not finite, so that it earns nothing."""
        floor = np.full(len(query_fp), -np.inf, np.float32)
        for index, k in self.parts:
            scores, _ = index.search(query_fp, k)
            floor = np.maximum(floor, scores[:, k - 1])
        return np.where(np.isfinite(floor), floor, 1.0).astype(np.float32)


def noise_floor(
    query_fp: np.ndarray, scores: np.ndarray, background: Background | None = None
) -> np.ndarray:
    """Per-segment chance similarity float32 (L,): the lowest real neighbour's score (L, k),
    raised to the background's k-th best score if there is one. Never below -1 (the least two
    unit vectors can score) nor NaN."""
    floor = lowest_neighbour(scores)
    return floor if background is None else np.maximum(floor, background.kth(query_fp))


def lowest_neighbour(scores: np.ndarray) -> np.ndarray:
    """Each row's lowest finite score float32 (L,) among scores (L, k): missing neighbours
    (-inf) are no evidence of chance similarity; a row with none gets 1.0, so nothing beats it."""
    real = np.isfinite(scores)
    lowest = np.where(real, scores, np.inf).min(axis=1, initial=np.inf)
    return np.where(real.any(axis=1), np.maximum(lowest, -1.0), 1.0).astype(np.float32)


def match_sequence(
    query_fp: np.ndarray,
    index: VectorIndex,
    segments: SegmentMap,
    *,
    k: int = TOP_K,
    min_coverage: float = MIN_COVERAGE,
    calibration: dict[str, Any] | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    usable: np.ndarray | None = None,
    floor: np.ndarray | None = None,
    other_music_floor: bool = False,
) -> SequenceMatch | None:
    """Best alignment of query fingerprints float32 (L, d) against the index, or None if empty.

    Every neighbour of every query segment proposes a start (its row minus the segment's place
    in the query); each proposal is scored over the whole query. Evidence counts, per query
    segment, how far the aligned stored segment beats that segment's k-th neighbour, so a true
    match earns more the longer the query, while chance hits of unrelated music stay low.
    `neighbours` are index.search's (scores, ids) when the caller has them already (streams,
    track lists). `usable` bool (L,) marks the query segments that may count: silence matches
    the silence of any track, so callers leave silent segments out. `floor` float32 (L,) is each
    segment's chance similarity, noise_floor's; by default the k-th neighbour's score.
    `other_music_floor`: a candidate's segment must also beat the best neighbour of any other
    track there (other_music_floors; ids of -1 with a finite score are another shard's rows).
    """
    query_fp = np.asarray(query_fp, np.float32)
    n_query = len(query_fp)
    if n_query == 0 or len(index) == 0:
        return None
    scores, ids = (
        neighbours if neighbours is not None else index.search(query_fp, min(k, len(index)))
    )
    usable = np.ones(n_query, bool) if usable is None else np.asarray(usable, bool)
    usable = usable & np.isfinite(query_fp).all(axis=1)  # a broken fingerprint says nothing
    if not usable.any():
        return None
    starts, tracks = _candidates(np.where(usable[:, None], ids, -1), segments)
    if starts.size == 0:
        return None
    floor = lowest_neighbour(scores) if floor is None else np.nan_to_num(floor, nan=1.0)
    if other_music_floor:
        floor = other_music_floors(scores, ids, index.vectors, segments, starts, floor)
    sims, valid = _aligned_similarity(query_fp, index.vectors, segments, starts, tracks)
    valid &= usable[None, :] & np.isfinite(sims)
    sims = np.where(valid, sims, 0.0)
    # An alignment that overlaps the track for a small part of the query (a track's last
    # seconds, say) is judged on too little music to be trusted.
    valid &= (valid.sum(axis=1) >= min_coverage * usable.sum())[:, None]
    evidence = (np.maximum(sims - floor, 0.0) * valid).sum(axis=1)
    mean_sim = (sims * valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    best = int(np.lexsort((mean_sim, evidence))[-1])
    track = int(tracks[best])
    start_segment = int(starts[best] - segments.first[track])
    shift = _subsegment_shift(query_fp, index.vectors, segments, starts[best], track, usable)
    return SequenceMatch(
        track=track,
        start_segment=start_segment,
        offset_s=max(0.0, (start_segment + shift) * HOP_S),
        score=float(mean_sim[best]),
        evidence=float(evidence[best]),
        confidence=confidence_from_evidence(float(evidence[best]), int(usable.sum()), calibration),
        n_query_segments=int(usable.sum()),
    )


def other_music_floors(
    scores: np.ndarray,
    ids: np.ndarray,
    vectors: np.ndarray | DecodedRows,
    segments: SegmentMap,
    starts: np.ndarray,
    floor: np.ndarray,
) -> np.ndarray:
    """Per candidate (its start row, (C,)) and query segment: the best score that other
    music reaches at that segment, never below floor (L,); float32 (C, L).

    Other music is a neighbour of another track that is not a copy of the candidate's aligned
    row (stored vectors closer than SAME_MUSIC: the same song twice in a library, as an album
    track and a compilation's, must not cancel itself out). Neighbours (scores, ids), each
    (L, k), best first: an id of -1 with a finite score is another shard's row (other music),
    with -inf none. Other music beyond the top k scores no more than the k-th neighbour, which
    the floor is never below."""
    n_query = len(ids)
    own = ids >= 0
    track = np.full(ids.shape, -1, np.int64)  # -1: another shard's row, or a row of no track
    track[own] = segments.track_of[ids[own]]
    kept = np.isfinite(scores)
    rows = np.asarray(vectors[np.where(own, ids, 0)], np.float32)  # (L, k, d)
    same = np.einsum("lid,ljd->lij", rows, rows) >= SAME_MUSIC  # (L, k, k)
    same &= own[:, :, None] & own[:, None, :]
    other = kept[:, None, :] & ~same & (track[:, :, None] != track[:, None, :])
    best_other = np.where(other, scores[:, None, :], -np.inf).max(axis=2)  # (L, k): per neighbour
    best_other = np.maximum(best_other, floor[:, None])
    # A candidate's aligned row among a segment's neighbours takes that neighbour's other
    # music; elsewhere it scores below the k-th neighbour, so the floor is all it can beat.
    aligned = starts[:, None] + np.arange(n_query)[None, :]  # (C, L)
    hit = (ids[None, :, :] == aligned[:, :, None]) & own[None, :, :]  # (C, L, k)
    found = hit.any(axis=2)
    which = hit.argmax(axis=2)
    floors = np.take_along_axis(best_other[None, :, :], which[:, :, None], axis=2)[:, :, 0]
    return np.where(found, floors, floor[None, :]).astype(np.float32)


def _candidates(ids: np.ndarray, segments: SegmentMap) -> tuple[np.ndarray, np.ndarray]:
    """Unique (start row, track) pairs from neighbours (L, k): where the query's first segment
    would sit if that neighbour is right, and the track of the neighbour that proposed it."""
    live = ids >= 0
    live[live] = segments.track_of[ids[live]] >= 0
    position = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)
    # return_index only to keep numpy (2.x) from importing numpy.ma to check for a masked
    # array, which it skips when indices are asked for: 7-30 ms of a one-shot `nfp identify`.
    pairs, _ = np.unique(
        np.stack([ids[live] - position[live], segments.track_of[ids[live]]], axis=1),
        axis=0,
        return_index=True,
    )
    return pairs[:, 0], pairs[:, 1]


def _aligned_similarity(
    query_fp: np.ndarray,
    vectors: np.ndarray,
    segments: SegmentMap,
    starts: np.ndarray,
    tracks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Inner products (C, L) of query segment i with row start + i, and where that row is valid.

    A row is valid when it belongs to the candidate's track, so an alignment never runs across
    the end of one track into the next.
    """
    rows = starts[:, None] + np.arange(len(query_fp))[None, :]
    in_range = (rows >= 0) & (rows < len(segments.track_of))
    clipped = np.clip(rows, 0, len(segments.track_of) - 1)
    valid = in_range & (segments.track_of[clipped] == tracks[:, None])
    sims = np.einsum("ld,cld->cl", query_fp, vectors[clipped])
    return np.where(valid, sims, 0.0).astype(np.float32), valid


def _subsegment_shift(
    query_fp: np.ndarray,
    vectors: np.ndarray,
    segments: SegmentMap,
    start: int,
    track: int,
    usable: np.ndarray,
) -> float:
    """Fractional hop (−0.5…0.5): the peak of a parabola through the mean similarity of the
    alignments start − 1, start and start + 1, over the usable query segments (L,)."""
    lo, hi = segments.first[track], segments.first[track] + segments.length[track]
    means = []
    for s in (start - 1, start, start + 1):
        rows = np.arange(s, s + len(query_fp))
        ok = (rows >= lo) & (rows < hi) & usable
        if not ok.any():
            return 0.0
        sims = np.sum(query_fp[ok] * vectors[rows[ok]], axis=1)
        sims = sims[np.isfinite(sims)]  # a damaged stored row says nothing
        if not sims.size:
            return 0.0
        means.append(float(np.mean(sims)))
    left, mid, right = means
    curvature = left - 2 * mid + right
    if curvature >= 0:  # no peak at start: keep the integer alignment
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
