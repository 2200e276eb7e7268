"""Query synthesis: degraded excerpts cut at random places of tracks, with their ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.core.audio import HOP_SAMPLES, SAMPLE_RATE
from training.degrade import LEVELS, Sources, at_tempo, degrade

CONTEXT_S = 1.0  # audio before each query that feeds its reverb tail (the rooms ring up to 1 s)
QUERY_CHUNK = 64  # queries degraded together (bounds the FFT memory)


@dataclass
class QuerySet:
    """Degraded queries of one length and level with ground truth; audio float32 (Q, n)."""

    level: str
    length_s: float
    tempo: float  # 1.0, or the tempo the queries were played at (pitch kept)
    track: np.ndarray  # int64 (Q,): index into the list of tracks the queries were cut from
    start_s: np.ndarray  # float64 (Q,): true start of the query inside that track
    audio: np.ndarray  # float32 (Q, n)


def make_queries(
    tracks: Sequence[np.ndarray],
    level: str,
    length_s: float,
    n_queries: int,
    sources: Sources,
    rng: np.random.Generator,
    *,
    tempo: float = 1.0,
) -> QuerySet:
    """n_queries degraded queries at random places of tracks (uniform over usable audio),
    played at tempo (pitch kept) when it is not 1."""
    n = round(length_s * SAMPLE_RATE)
    context = int(CONTEXT_S * SAMPLE_RATE)
    # Source samples a query and its context take; a little more for the stretcher's edges.
    span = context + n if tempo == 1.0 else int(np.ceil((context + n) * tempo)) + HOP_SAMPLES
    usable = np.array([max(0, len(t) - span) for t in tracks], np.float64)
    if usable.sum() <= 0:
        raise ValueError(f"no track is longer than a {length_s:g} s query")
    track = rng.choice(len(tracks), size=n_queries, p=usable / usable.sum())
    first = (rng.random(n_queries) * usable[track]).astype(np.int64)  # context start
    audio = np.empty((n_queries, n), np.float32)
    for lo in range(0, n_queries, QUERY_CHUNK):
        rows = range(lo, min(lo + QUERY_CHUNK, n_queries))
        raw = np.stack([at_tempo(tracks[track[i]][first[i] : first[i] + span], tempo)[: context + n]
                        for i in rows])  # fmt: skip
        audio[lo : lo + len(raw)] = degrade(raw, n, LEVELS[level], sources, rng)
    start_s = (first + context * tempo) / SAMPLE_RATE
    return QuerySet(level, length_s, tempo, track.astype(np.int64), start_s, audio)
