"""Queries answered as `nfp identify` answers them, and what each answer was."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.core.audio import HOP_S, HOP_SAMPLES, SAMPLE_RATE, count_segments
from engine.query.recognize import Recognizer
from training.protocol import DOMAINS
from training.queries import QuerySet

REPEAT_CORR = 0.9  # clean-audio correlation above which two places of a track are one repeat
# How far the reported start may lie from the true one. The engine refines offsets below a hop,
# so an answer is judged by its error, not by rounding both starts to segments: rounded, a 65 ms
# error across a segment boundary counted as a miss (5.5 % of mid-level 5 s answers did).
EXACT_S = HOP_S / 2  # the tolerance a segment gives, centred on the true start
NEAR_S = HOP_S


@dataclass
class Outcome:
    """Per-query results of one QuerySet (arrays of length Q)."""

    level: str
    length_s: float
    n_segments: int  # of the query at its first start
    kind: str  # "unseen", "in-domain" (library queries), "nonlibrary-a" or "nonlibrary-b"
    tempo: float  # 1.0, or the stretch cell's tempo
    found_track: np.ndarray  # int64, -1 where no match
    true_track: np.ndarray  # int64, database track index (-1 for non-library)
    offset_s: np.ndarray  # the reported start
    true_start_s: np.ndarray
    evidence: np.ndarray
    score: np.ndarray
    used_segments: np.ndarray  # int64, segments the winning alignment counted (its confidence)
    repeat: np.ndarray | None = None  # bool: wrong offset, but the music there is the same

    @property
    def offset_error_s(self) -> np.ndarray:
        """|reported start - true start| float64 (Q,); meaningful where the track is right."""
        return np.abs(self.offset_s - self.true_start_s)


def run_queries(queries: QuerySet, kind: str, recognizer: Recognizer) -> Outcome:
    """Identify every query as `nfp identify` does (Recognizer.best_match)."""
    n_queries, n = queries.audio.shape
    found, used = (np.full(n_queries, -1, np.int64) for _ in range(2))
    offset_s, evidence, score = (np.zeros(n_queries) for _ in range(3))
    for q in range(n_queries):
        match = recognizer.best_match(queries.audio[q])
        if match is not None:
            found[q], offset_s[q], used[q] = match.track, match.offset_s, match.n_query_segments
            evidence[q], score[q] = match.evidence, match.score
    library = kind in DOMAINS
    return Outcome(
        level=queries.level,
        length_s=queries.length_s,
        n_segments=count_segments(n),
        kind=kind,
        tempo=queries.tempo,
        found_track=found,
        true_track=queries.track if library else np.full(n_queries, -1, np.int64),
        offset_s=offset_s,
        true_start_s=queries.start_s,
        evidence=evidence,
        score=score,
        used_segments=used,
    )


def find_repeats(outcome: Outcome, tracks: Sequence[np.ndarray]) -> np.ndarray:
    """Right-track, wrong-offset answers that point at a repeat of the same music, bool (Q,).

    Game music loops: a section often recurs sample for sample, and then no fingerprint can tell
    the two places apart. An answer counts as a repeat when the clean audio at the answered
    offset (give or take half a hop, as loops need not be a whole number of hops long)
    correlates >= REPEAT_CORR with the clean audio at the true offset, over the query's length
    (at most 3 s).
    """
    from scipy.signal import correlate  # in the train extra, like everything here

    repeat = np.zeros(len(outcome.evidence), bool)
    if outcome.tempo != 1.0:
        return repeat  # a stretched query's audio is not sample-identical to any place
    right_track = outcome.found_track == outcome.true_track
    n = round(min(outcome.length_s, 3.0) * SAMPLE_RATE)
    lag = HOP_SAMPLES // 2
    for q in np.flatnonzero(right_track & (outcome.offset_error_s > EXACT_S)):
        audio = tracks[outcome.true_track[q]]
        a0 = round(outcome.true_start_s[q] * SAMPLE_RATE)
        b0 = round(outcome.offset_s[q] * SAMPLE_RATE) - lag
        if b0 < 0 or b0 + n + 2 * lag > len(audio) or a0 + n > len(audio):
            continue
        a, b = audio[a0 : a0 + n], audio[b0 : b0 + n + 2 * lag]
        dots = correlate(b, a, mode="valid", method="fft")  # (2 * lag + 1,)
        energy = np.convolve(b**2, np.ones(n), mode="valid")  # of each window of b
        corr = dots / np.sqrt(np.maximum(energy * float(a @ a), 1e-12))
        repeat[q] = float(corr.max()) >= REPEAT_CORR
    return repeat
