"""Which track each stored row belongs to: the map a search turns row ids into tracks with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentMap:
    """Which track each stored row belongs to. Track i owns rows first[i] : first[i] + length[i]."""

    first: np.ndarray  # int64 (T,)
    length: np.ndarray  # int64 (T,)
    track_of: np.ndarray  # int32 (N,), -1 for rows of no live track

    @classmethod
    def from_tracks(cls, first: np.ndarray, length: np.ndarray, n_rows: int) -> SegmentMap:
        first = np.asarray(first, np.int64)
        length = np.asarray(length, np.int64)
        track_of = np.full(n_rows, -1, np.int32)
        for i, (f, n) in enumerate(zip(first, length, strict=True)):
            track_of[f : f + n] = i
        return cls(first=first, length=length, track_of=track_of)

    @classmethod
    def from_lengths(cls, lengths: np.ndarray | list[int]) -> SegmentMap:
        """Tracks stored back to back in this order."""
        length = np.asarray(lengths, np.int64)
        first = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
        return cls.from_tracks(first, length, int(length.sum()))
