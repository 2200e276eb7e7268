"""Live identification: audio blocks in, match updates out, one new fingerprint per 0.5 s.

Old fingerprints are never recomputed. While a match holds, each new segment is checked against
the stored segment where the track should be by now (one dot product), so following a track
costs next to nothing. A failed check searches the window again: music that repeats (a chorus)
can hold the wrong repeat until the two places part, and then the right one has more evidence.
When several checks in a row fail (the music jumped or changed), the match is dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.core.audio import (
    HOP_S,
    HOP_SAMPLES,
    SAMPLE_RATE,
    SEGMENT_SAMPLES,
    Resampler,
    count_segments,
)
from engine.model.scoring import is_loud
from engine.query.recognize import Recognizer
from engine.query.search import Match

WINDOW_SEGMENTS = 19  # search over the last 10 s at most
MIN_SEGMENTS = 3  # first search after 2 s of audio
LOST_AFTER = 4  # consecutive failed checks (2 s) before a held match is dropped
NO_MATCH_AFTER_S = 10.0  # say "no match" after this much audio without a confident answer


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
        self._nbrs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=WINDOW_SEGMENTS)
        self._loud: deque[bool] = deque(maxlen=WINDOW_SEGMENTS)
        self._n_segments = 0  # segments made since the start
        self._held: _Placed | None = None
        self._proposed: _Placed | None = None  # the last search's, unconfirmed
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
        scores, ids, floor = self.recognizer.neighbours(fp)
        loud = is_loud(segments, self.recognizer.scoring.silence_rms)
        for i in range(len(fp)):
            self._fps.append(fp[i])
            self._nbrs.append((scores[i], ids[i], floor[i]))
            self._loud.append(bool(loud[i]))
            self._n_segments += 1
            if self._held is not None:
                self._check_held(fp[i], floor[i])
        if self._held is None and len(self._fps) >= MIN_SEGMENTS:
            self._search()

    def _check_held(self, fp: np.ndarray, floor: float) -> None:
        """Does the newest segment still sit where the held match says it should?"""
        held = self._held
        expected = held.position + (self._n_segments - 1 - held.first_segment)
        inside = 0 <= expected < held.match.track.n_segments
        sim = self.recognizer.catalogue.similarity(fp[None], held.track, np.array([expected]))
        if inside and float(sim[0]) > floor:
            self._misses = 0
            return
        better = self._window_match()
        if better is not None and not _agree(self._held, better):
            self._held, self._misses = better, 0
            return
        self._misses += 1
        if self._misses >= LOST_AFTER or not inside:
            # The music changed where the misses began: search only what was heard since.
            keep = self._misses
            for window in (self._fps, self._nbrs, self._loud):
                for _ in range(len(window) - keep):
                    window.popleft()
            self._held = None
            self._proposed = None
            self._misses = 0

    def _window_match(self) -> _Placed | None:
        """The confident match of the whole window, placed on the stored rows, or None."""
        fp = np.stack(self._fps)
        scores, ids, floor = zip(*self._nbrs, strict=True)
        nbrs = (np.stack(scores), np.stack(ids), np.array(floor, np.float32))
        found = self.recognizer.best(fp, nbrs, np.array(self._loud))
        match = self.recognizer.as_match(found)
        if match is None:
            return None
        position = round(match.offset_s / HOP_S)
        return _Placed(match, found.track, position, self._n_segments - len(fp))

    def _search(self) -> None:
        """Hold a match once two searches in a row agree on the track and its alignment.

        Listening searches every 0.5 s, so a chance match of unrelated music would sooner or
        later pass a one-off threshold; asking two searches to agree keeps that rare.
        """
        found = self._window_match()
        if found is not None and self._proposed is not None and _agree(self._proposed, found):
            self._held, self._misses = found, 0
        self._proposed = found

    def _update_state(self, level: float) -> LiveState:
        heard_s = self._heard / SAMPLE_RATE
        if self._held is not None:
            match, seg = self._held.match, self._held.first_segment
            # Where in the track the newest sample is: the match's start plus what was heard since.
            elapsed = heard_s - seg * HOP_S
            live = Match(match.track, match.offset_s + elapsed, match.score, match.confidence)
            return LiveState("matched", live, level, heard_s)
        status = "no_match" if heard_s >= NO_MATCH_AFTER_S else "listening"
        return LiveState(status, None, level, heard_s)


class _Placed(NamedTuple):
    """A match placed on the stored segments: which of the track's segments is aligned with
    the window's first segment."""

    match: Match
    track: int  # the recognizer's track number (its catalogue's)
    position: int  # segment of the track aligned with the window's first segment
    first_segment: int  # segment number (since the start) of the window's first segment


def _agree(a: _Placed, b: _Placed) -> bool:
    """Same track, and the same alignment of heard segments to stored ones (±1 segment)."""
    expected = a.position + (b.first_segment - a.first_segment)
    return a.track == b.track and abs(b.position - expected) <= 1


def _level_db(samples: np.ndarray) -> float:
    samples = np.asarray(samples, np.float32)
    rms = float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0
    return 20.0 * np.log10(max(rms, 1e-6))
