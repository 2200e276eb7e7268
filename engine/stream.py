"""Live identification: audio blocks in, match updates out, one new fingerprint per 0.5 s.

Old fingerprints are never recomputed. While a match holds, each new segment is only checked
against the stored segment where the track should be by now (one dot product), so following a
track costs nothing; when several checks in a row fail (the music jumped or changed), the
window is searched again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from engine.audio import (
    HOP_S,
    HOP_SAMPLES,
    SAMPLE_RATE,
    SEGMENT_SAMPLES,
    Resampler,
    count_segments,
)
from engine.recognize import Match, Recognizer, is_loud

WINDOW_SEGMENTS = 19  # search over the last 10 s at most
MIN_SEGMENTS = 3  # first search after 2 s of audio
LOST_AFTER = 4  # consecutive failed checks (2 s) before a held match is dropped
NO_MATCH_AFTER_S = 10.0  # say "no match" after this much audio without a confident answer
# Listening searches every 0.5 s, so it holds a stricter bar than a one-off identify, whose
# threshold (confidence 0.5) is calibrated for 1 % false positives per query.
LIVE_CONFIDENCE = 0.6


@dataclass(frozen=True)
class LiveState:
    """What a listener shows after each block."""

    status: str  # "listening" | "matched" | "no_match"
    match: Match | None  # the held match, with offset_s at the latest heard sample
    level_db: float  # input level of the latest block (dBFS)
    heard_s: float  # seconds of audio received


class LiveMatcher:
    """Feed blocks of any rate with push(); read the state it returns."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.recognizer = recognizer
        self._resampler = Resampler()
        self._pending = np.zeros(0, np.float32)  # resampled audio not yet fully used by a segment
        self._fps: deque[np.ndarray] = deque(maxlen=WINDOW_SEGMENTS)
        self._nbrs: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=WINDOW_SEGMENTS)
        self._loud: deque[bool] = deque(maxlen=WINDOW_SEGMENTS)
        self._n_segments = 0  # segments made since the start
        self._held: tuple[Match, int, int] | None = None  # match, its stored row, its segment no.
        self._proposed: tuple[Match, int, int] | None = None  # the last search's, unconfirmed
        self._misses = 0
        self._heard = 0  # samples at 8 kHz

    def push(self, samples: np.ndarray, rate: int) -> LiveState:
        """Add a block float32 (n,) or (n, channels) at `rate` Hz; returns the updated state."""
        level = _level_db(samples)
        audio = self._resampler.block(samples, rate)
        self._heard += len(audio)
        self._pending = np.concatenate([self._pending, audio])
        new = self._take_segments()
        if len(new):
            self._add_segments(new)
        return self._update_state(level)

    def _take_segments(self) -> np.ndarray:
        if len(self._pending) < SEGMENT_SAMPLES:
            return np.zeros((0, SEGMENT_SAMPLES), np.float32)
        count = count_segments(len(self._pending))
        windows = np.lib.stride_tricks.sliding_window_view(self._pending, SEGMENT_SAMPLES)
        segments = np.array(windows[: count * HOP_SAMPLES : HOP_SAMPLES])
        self._pending = self._pending[count * HOP_SAMPLES :]
        return segments

    def _add_segments(self, segments: np.ndarray) -> None:
        fp = self.recognizer.fingerprinter.segments(segments)
        scores, ids = self.recognizer.neighbours(fp)
        loud = is_loud(segments)
        for i in range(len(fp)):
            self._fps.append(fp[i])
            self._nbrs.append((scores[i], ids[i]))
            self._loud.append(bool(loud[i]))
            self._n_segments += 1
            if self._held is not None:
                self._check_held(fp[i], scores[i][-1])
        if self._held is None and len(self._fps) >= MIN_SEGMENTS:
            self._search()

    def _check_held(self, fp: np.ndarray, floor: float) -> None:
        """Does the newest segment still sit where the held match says it should?"""
        match, row, seg = self._held
        expected = row + (self._n_segments - 1 - seg)
        track = match.track
        inside = track.first_segment <= expected < track.first_segment + track.n_segments
        ok = inside and float(self.recognizer.index.vectors[expected] @ fp) > floor
        self._misses = 0 if ok else self._misses + 1
        if self._misses >= LOST_AFTER or not inside:
            # The music changed where the misses began: search only what was heard since.
            keep = self._misses
            for window in (self._fps, self._nbrs, self._loud):
                for _ in range(len(window) - keep):
                    window.popleft()
            self._held = None
            self._proposed = None
            self._misses = 0

    def _search(self) -> None:
        fp = np.stack(self._fps)
        nbrs = (np.stack([s for s, _ in self._nbrs]), np.stack([i for _, i in self._nbrs]))
        match = self.recognizer.as_match(self.recognizer.best(fp, nbrs, np.array(self._loud)))
        if match is None or match.confidence < LIVE_CONFIDENCE:
            self._proposed = None
            return
        first_seg = self._n_segments - len(fp)
        row = match.track.first_segment + round(match.offset_s / HOP_S)
        if self._confirms(match, row, first_seg):
            self._held = (match, row, first_seg)
            self._misses = 0
        self._proposed = (match, row, first_seg)

    def _confirms(self, match: Match, row: int, first_seg: int) -> bool:
        """Does this match agree with the previous search's, track and alignment?

        Listening searches every 0.5 s, so a chance match of unrelated music would sooner or
        later pass any threshold; requiring two searches in a row to agree keeps that rare.
        """
        if self._proposed is None:
            return False
        previous, previous_row, previous_seg = self._proposed
        expected = previous_row + (first_seg - previous_seg)
        return previous.track.id == match.track.id and abs(row - expected) <= 1

    def _update_state(self, level: float) -> LiveState:
        heard_s = self._heard / SAMPLE_RATE
        if self._held is not None:
            match, _, seg = self._held
            # Where in the track the newest sample is: the match's start plus what was heard since.
            elapsed = heard_s - seg * HOP_S
            live = Match(match.track, match.offset_s + elapsed, match.score, match.confidence)
            return LiveState("matched", live, level, heard_s)
        status = "no_match" if heard_s >= NO_MATCH_AFTER_S else "listening"
        return LiveState(status, None, level, heard_s)


def _level_db(samples: np.ndarray) -> float:
    samples = np.asarray(samples, np.float32)
    rms = float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0
    return 20.0 * np.log10(max(rms, 1e-6))
