"""Query synthesis: degraded excerpts cut at random places of tracks, with their ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.core.audio import HOP_SAMPLES, SAMPLE_RATE, frame_segments
from engine.model.fingerprint import silence_level
from engine.model.scoring import segment_rms
from training.degrade import LEVELS, Sources, at_tempo, degrade

CONTEXT_S = 1.0  # audio before each query that feeds its reverb tail (the rooms ring up to 1 s)
QUERY_CHUNK = 64  # queries degraded together (bounds the FFT memory)
REDRAWS = 64  # a silent excerpt is drawn again, so often that only near-silent tracks fail


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
    played at tempo (pitch kept) when it is not 1. An excerpt of silence (the gap or fade at a
    track's end: no louder than what a library stores as silence, fingerprint.silence_level) is
    drawn again: with no music in it, it is not a query of the library."""
    n = round(length_s * SAMPLE_RATE)
    context = int(CONTEXT_S * SAMPLE_RATE)
    # Source samples a query and its context take; a little more for the stretcher's edges.
    span = context + n if tempo == 1.0 else int(np.ceil((context + n) * tempo)) + HOP_SAMPLES
    usable = np.array([max(0, len(t) - span) for t in tracks], np.float64)
    if usable.sum() <= 0:
        raise ValueError(f"no track is longer than a {length_s:g} s query")

    def draw(count: int, source: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        track = source.choice(len(tracks), size=count, p=usable / usable.sum())
        return track, (source.random(count) * usable[track]).astype(np.int64)  # context start

    track, first = draw(n_queries, rng)
    # Redraws come from a child generator, so every excerpt with music in it, and every
    # degradation, is the one the same seed drew before silent excerpts were redrawn.
    redraw = rng.spawn(1)[0]
    heard = (round(context * tempo), round((context + n) * tempo))
    levels: dict[int, float] = {}
    for _ in range(REDRAWS):
        for t in set(track.tolist()) - set(levels):
            levels[t] = silence_level(segment_rms(frame_segments(tracks[t])))
        rms = [segment_rms(tracks[t][None, f + heard[0] : f + heard[1]])[0]
               for t, f in zip(track, first, strict=True)]  # fmt: skip
        silent = np.flatnonzero(np.array(rms) <= np.array([levels[t] for t in track]))
        if not len(silent):
            break
        track[silent], first[silent] = draw(len(silent), redraw)
    else:
        raise ValueError(f"{len(silent)} of {n_queries} excerpts were silent in {REDRAWS} draws: "
                         "the tracks are almost all silence")  # fmt: skip
    audio = np.empty((n_queries, n), np.float32)
    for lo in range(0, n_queries, QUERY_CHUNK):
        rows = range(lo, min(lo + QUERY_CHUNK, n_queries))
        raw = np.stack([at_tempo(tracks[track[i]][first[i] : first[i] + span], tempo)[: context + n]
                        for i in rows])  # fmt: skip
        audio[lo : lo + len(raw)] = degrade(raw, n, LEVELS[level], sources, rng)
    start_s = (first + context * tempo) / SAMPLE_RATE
    return QuerySet(level, length_s, tempo, track.astype(np.int64), start_s, audio)


def no_music_queries(
    level: str, length_s: float, n_queries: int, sources: Sources, rng: np.random.Generator
) -> QuerySet:
    """n_queries recordings of a room with no music playing, float32 (Q, n): the level's noise
    and voices alone, at the RMS a silent signal gets (degrade.mix_at_snr)."""
    n = round(length_s * SAMPLE_RATE)
    silence = np.zeros((n_queries, int(CONTEXT_S * SAMPLE_RATE) + n), np.float32)
    audio = np.concatenate([degrade(silence[lo : lo + QUERY_CHUNK], n, LEVELS[level], sources, rng)
                            for lo in range(0, n_queries, QUERY_CHUNK)])  # fmt: skip
    none = np.full(n_queries, -1, np.int64)
    return QuerySet(level, length_s, 1.0, none, np.zeros(n_queries), audio)
