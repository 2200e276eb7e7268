"""Identification against a library: a query's audio → the track and the offset inside it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.audio import HOP_S, SAMPLE_RATE, SEGMENT_S, frame_segments
from engine.checkpoint import Checkpoint
from engine.fingerprint import Fingerprinter
from engine.library import Library, Track
from engine.search import CONFIDENCE_THRESHOLD, TOP_K, SequenceMatch, match_sequence

MAX_QUERY_S = 60.0  # a longer file is identified from its first minute; use a track list for mixes
TRACKLIST_WINDOW = 9  # segments per track-list window (5 s of audio)
TRACKLIST_HOP = 2  # segments between windows (1 s)
TRACKLIST_DRIFT = 2  # segments of alignment drift still counted as the same play of a track


@dataclass(frozen=True)
class Match:
    """A confident identification: which track, where in it the query starts, how sure."""

    track: Track
    offset_s: float
    score: float
    confidence: float

    def to_json(self) -> dict:
        """The `match` object of `nfp identify --json` (DESIGN.md section 5)."""
        return {
            "path": self.track.path,
            "title": self.track.title,
            "artist": self.track.artist,
            "offset_s": round(self.offset_s, 3),
            "score": round(self.score, 4),
            "confidence": round(self.confidence, 4),
        }


@dataclass(frozen=True)
class TracklistEntry:
    start_s: float  # in the recording
    end_s: float
    track: Track
    offset_s: float  # in the track, at start_s
    confidence: float

    def to_json(self) -> dict:
        return {
            "start_s": round(self.start_s, 2),
            "end_s": round(self.end_s, 2),
            "path": self.track.path,
            "title": self.track.title,
            "artist": self.track.artist,
            "offset_s": round(self.offset_s, 2),
            "confidence": round(self.confidence, 4),
        }


class Recognizer:
    """A library opened for search with the checkpoint that built it."""

    def __init__(self, library: Library, checkpoint: Checkpoint) -> None:
        library.check_checkpoint(checkpoint)
        self.library = library
        self.fingerprinter = Fingerprinter(checkpoint)
        self.calibration = checkpoint.evaluation.get("calibration")
        self.index, self.segments, self.tracks = library.search_index()

    def neighbours(self, query_fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids), each (L, k), for fingerprints (L, d)."""
        return self.index.search(query_fp, min(TOP_K, len(self.index)))

    def best(
        self, query_fp: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray] | None = None
    ) -> SequenceMatch | None:
        """The best alignment of fingerprints (L, d), confident or not."""
        return match_sequence(
            query_fp, self.index, self.segments, calibration=self.calibration, neighbours=neighbours
        )

    def as_match(self, found: SequenceMatch | None) -> Match | None:
        """The identification a user sees, or None below the confidence threshold."""
        if found is None or found.confidence < CONFIDENCE_THRESHOLD:
            return None
        return Match(self.tracks[found.track], found.offset_s, found.score, found.confidence)

    def identify(self, audio: np.ndarray) -> Match | None:
        """Audio float32 (n,) at SAMPLE_RATE → a confident Match or None."""
        audio = audio[: int(MAX_QUERY_S * SAMPLE_RATE)]
        return self.as_match(self.best(self.fingerprinter.audio(audio)))

    def tracklist(self, audio: np.ndarray) -> list[TracklistEntry]:
        """A long recording float32 (n,) → which tracks play when, in order."""
        fp = self.fingerprinter.segments(frame_segments(audio))
        scores, ids = self.neighbours(fp)
        hits = []
        for start in range(0, max(1, len(fp) - TRACKLIST_WINDOW + 1), TRACKLIST_HOP):
            window = slice(start, start + TRACKLIST_WINDOW)
            found = self.as_match_at(fp[window], (scores[window], ids[window]))
            if found is not None:
                hits.append((start, min(start + TRACKLIST_WINDOW, len(fp)), found))
        return _merge_hits(hits, self.tracks)

    def as_match_at(
        self, query_fp: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray]
    ) -> SequenceMatch | None:
        found = self.best(query_fp, neighbours)
        return found if found is not None and found.confidence >= CONFIDENCE_THRESHOLD else None


def _merge_hits(
    hits: list[tuple[int, int, SequenceMatch]], tracks: list[Track]
) -> list[TracklistEntry]:
    """Join consecutive windows that agree on track and alignment into one entry."""
    entries: list[list] = []  # [first_seg, last_seg_end, match_at_first, confidence_max]
    for start, end, m in hits:
        delta = m.start_segment - start  # stored segment minus recording segment: constant per play
        if entries:
            prev = entries[-1]
            prev_delta = prev[2].start_segment - prev[0]
            if (
                prev[2].track == m.track
                and abs(prev_delta - delta) <= TRACKLIST_DRIFT
                and start <= prev[1]
            ):
                prev[1] = end
                prev[3] = max(prev[3], m.confidence)
                continue
        entries.append([start, end, m, m.confidence])
    return [
        TracklistEntry(
            start_s=first * HOP_S,
            end_s=(last - 1) * HOP_S + SEGMENT_S,
            track=tracks[m.track],
            offset_s=m.offset_s,
            confidence=conf,
        )
        for first, last, m, conf in entries
    ]
