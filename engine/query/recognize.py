"""Identification against a library: a query's audio → the track and the offset inside it."""

from __future__ import annotations

import itertools
from collections.abc import Generator
from dataclasses import dataclass, replace

import numpy as np

from engine.core.audio import HOP_S, SAMPLE_RATE, SEGMENT_S, frame_segments
from engine.core.steps import run_steps
from engine.library.binding import check_checkpoint
from engine.library.library import Library
from engine.library.searching import search_index
from engine.library.tracks import Track
from engine.model.checkpoint import Checkpoint
from engine.model.fingerprint import Fingerprinter, require_reference
from engine.model.scoring import EVIDENCE_TIE, QUERY_SHIFTS_S, Scoring, is_loud
from engine.query.search import (
    CONFIDENCE_THRESHOLD,
    Background,
    Match,
    SequenceMatch,
    noise_floor,
)
from engine.query.shards import Alignment, Catalogue, Searched

MAX_QUERY_S = 60.0  # a longer file is identified from its first minute; use a track list for mixes
TRACKLIST_WINDOW = 9  # segments per track-list window (5 s of audio)
TRACKLIST_HOP = 2  # segments between windows (1 s)
TRACKLIST_DRIFT = 2  # segments of alignment drift still counted as the same play of a track
TRACKLIST_GAP = 4  # segments (2 s) of unconfident windows that do not split one play in two
TRACKLIST_PROGRESS_WINDOWS = 50  # windows matched between two progress reports
# Of a track list's time after decoding, fingerprinting takes this share: 2.1 of 2.4 s for a
# 6.6 min recording here (the 5 s windows' search and alignment the rest).
TRACKLIST_FINGERPRINT_SHARE = 0.9


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
            "path": self.track.display_path,
            "title": self.track.title,
            "artist": self.track.artist,
            "offset_s": round(self.offset_s, 2),
            "confidence": round(self.confidence, 4),
        }


Neighbours = tuple[np.ndarray, np.ndarray, np.ndarray]  # scores (L, k), ids (L, k), floor (L,)


class Recognizer:
    """A library, or a catalogue of them, opened for search with the checkpoint that built it."""

    def __init__(
        self,
        library: Library | Catalogue | None,
        checkpoint: Checkpoint,
        *,
        precision: str | None = None,
        shifts_s: tuple[float, ...] | None = None,
        searched: Searched | None = None,
    ) -> None:
        """`searched`: an index made elsewhere (a benchmark's), in place of the library's; a
        Catalogue's libraries were checked against the checkpoint when it was opened."""
        if isinstance(library, Library):
            check_checkpoint(library, checkpoint)
        self.shifts_s = shifts_s  # sub-hop starts for file queries; None: by length
        self.fingerprinter = Fingerprinter(checkpoint, precision=precision)
        require_reference(self.fingerprinter)  # what `nfp info` checks, once per load
        self.calibration = checkpoint.evaluation.get("calibration")
        self.scoring = Scoring.from_calibration(self.calibration)  # checked at load
        self.background = Background.of(checkpoint.background, self.scoring)
        if isinstance(library, Catalogue):
            self.catalogue = library
        else:
            self.catalogue = Catalogue.of_searched(searched or search_index(library))
        self.tracks = self.catalogue.tracks
        self.alignment = Alignment(self.scoring.top_k, self.scoring.min_coverage, self.calibration,
                                   self.scoring.other_music_floor)  # fmt: skip

    def neighbours(self, query_fp: np.ndarray) -> Neighbours:
        """Top-k (scores, ids), each (L, k), and each segment's noise floor (L,), for
        fingerprints (L, d)."""
        scores, ids = self.catalogue.search(query_fp, self.scoring.top_k)
        floor = noise_floor(query_fp, scores, self.background)
        return scores, ids, floor

    def best(
        self,
        query_fp: np.ndarray,
        neighbours: Neighbours | None = None,
        usable: np.ndarray | None = None,
    ) -> SequenceMatch | None:
        """The best alignment of fingerprints (L, d), confident or not; `usable` bool (L,)."""
        query_fp = np.asarray(query_fp, np.float32)
        scores, ids, floor = self.neighbours(query_fp) if neighbours is None else neighbours
        usable = np.ones(len(query_fp), bool) if usable is None else np.asarray(usable, bool)
        return self.catalogue.best(query_fp, (scores, ids), floor, usable, self.alignment)

    def as_match(self, found: SequenceMatch | None) -> Match | None:
        """The identification a user sees, or None below the confidence threshold."""
        if not _confident(found):
            return None
        return Match(self.tracks[found.track], found.offset_s, found.score, found.confidence)

    def identify(self, audio: np.ndarray) -> Match | None:
        """Audio float32 (n,) at SAMPLE_RATE → a confident Match or None (what `nfp identify`
        and the app report)."""
        return self.as_match(self.best_match(audio))

    def best_match(self, audio: np.ndarray) -> SequenceMatch | None:
        """Audio float32 (n,) at SAMPLE_RATE → its best alignment, confident or not, with the
        offset of the shift that won (the evaluation harness scores this, identify reports it).

        The query is fingerprinted at several sub-hop shifts and the alignment with the most
        evidence wins: one shift lies close to the stored segment grid (within 50 ms for a short
        query's five shifts, 125 ms for a long query's two, whose evidence accumulates over more
        segments), where a true match is near-perfect, so a similar-sounding repeat elsewhere in
        the track cannot outscore it. Where a long query's two shifts disagree, a repeat may lie
        nearer the grid than the true place in one of them, so the short query's shifts are
        tried too (Scoring.escalate_shifts).
        """
        audio = audio[: int(MAX_QUERY_S * SAMPLE_RATE)]
        tried = self.shifts_s or self.scoring.shifts_s(len(audio))
        found = self._shift_matches(shifted_segments(audio, tried))
        more = tuple(s for s in self.scoring.query_shifts_s if s not in tried)
        if self.scoring.escalate_shifts and more and _disagree(found):
            found += self._shift_matches(shifted_segments(audio, more))
        return best_of_shifts(found, self.scoring.evidence_tie)

    def _shift_matches(self, shifts: list[tuple[float, np.ndarray]]) -> list[SequenceMatch | None]:
        """Each shift's best alignment, its offset measured from the query's own start."""
        if not shifts:
            return []
        # One encoder call and one search for every shift: a batch of 5 × 9 segments costs
        # less than five of 9 (pool wake-ups, per-call overhead).
        segments = np.concatenate([segs for _, segs in shifts])
        fp = self.fingerprinter.segments(segments)
        scores, ids, floor = self.neighbours(fp)
        loud = is_loud(segments, self.scoring.silence_rms)
        found, first = [], 0
        for shift_s, segs in shifts:
            rows = slice(first, first + len(segs))
            first += len(segs)
            match = self.best(fp[rows], (scores[rows], ids[rows], floor[rows]), loud[rows])
            found.append(match and replace(match, offset_s=max(0.0, match.offset_s - shift_s)))
        return found

    def tracklist(self, audio: np.ndarray) -> list[TracklistEntry]:
        """A long recording float32 (n,) → which tracks play when, in order (tracklist_steps
        without its progress)."""
        return run_steps(self.tracklist_steps(audio))

    def tracklist_steps(self, audio: np.ndarray) -> Generator[float, None, list[TracklistEntry]]:
        """A long recording float32 (n,) → which tracks play when, in order; yields the share
        done (0…1) as it goes, so a caller can show progress and stop between steps.

        Windows of 5 s every 1 s are matched; consecutive windows that agree on the track and its
        alignment form one play, whose ends are then trimmed to the segments that really match.
        """
        segments = frame_segments(audio)
        batch = self.fingerprinter.batch_segments
        fp = np.empty((len(segments), self.fingerprinter.d), np.float32)
        for lo in range(0, len(segments), batch):
            fp[lo : lo + batch] = self.fingerprinter.segments(segments[lo : lo + batch])
            yield TRACKLIST_FINGERPRINT_SHARE * min(1.0, (lo + batch) / len(segments))
        loud = is_loud(segments, self.scoring.silence_rms)
        scores, ids, floor = self.neighbours(fp)
        plays: list[_Play] = []
        starts = range(0, max(1, len(fp) - TRACKLIST_WINDOW + 1), TRACKLIST_HOP)
        for n, start in enumerate(starts):
            if n % TRACKLIST_PROGRESS_WINDOWS == 0:
                share = TRACKLIST_FINGERPRINT_SHARE
                yield share + (1.0 - share) * n / len(starts)
            window = slice(start, start + TRACKLIST_WINDOW)
            found = self.best(
                fp[window], (scores[window], ids[window], floor[window]), loud[window]
            )
            if not _confident(found):
                continue
            end = min(start + TRACKLIST_WINDOW, len(fp))
            if not (plays and plays[-1].extend(start, end, found)):
                plays.append(_Play(start, end, found, found.confidence))
        return _without_overlaps([self._entry(play, fp, floor) for play in plays])

    def _entry(self, play: _Play, fp: np.ndarray, floor: np.ndarray) -> TracklistEntry:
        """Trim a play to the recording segments whose aligned stored segment beats their floor."""
        track = self.tracks[play.match.track]
        segs = np.arange(play.first, play.end)
        positions = play.match.start_segment + (segs - play.first)
        sims = self.catalogue.similarity(fp[segs], play.match.track, positions)
        on = segs[sims > floor[segs]]
        first, last = (on[0], on[-1]) if on.size else (play.first, play.end - 1)
        return TracklistEntry(
            start_s=first * HOP_S,
            end_s=last * HOP_S + SEGMENT_S,
            track=track,
            offset_s=play.match.offset_s + (first - play.first) * HOP_S,
            confidence=play.confidence,
        )


def _without_overlaps(entries: list[TracklistEntry]) -> list[TracklistEntry]:
    """Entries in order, each ending where the next begins at the latest: a play's last segment
    reaches a hop past its start, into the next play's first."""
    trimmed = [replace(e, end_s=max(e.start_s, min(e.end_s, after.start_s)))
               for e, after in itertools.pairwise(entries)]  # fmt: skip
    return trimmed + entries[-1:]


def shifted_segments(
    audio: np.ndarray, shifts_s: tuple[float, ...] = QUERY_SHIFTS_S
) -> list[tuple[float, np.ndarray]]:
    """(shift_s, segments (L, SEGMENT_SAMPLES)) of audio float32 (n,) started at each of
    shifts_s; shifts that would leave less than one segment are left out."""
    shifts = []
    for shift_s in shifts_s:
        shift = int(shift_s * SAMPLE_RATE)
        if shift == 0 or len(audio) - shift >= SEGMENT_S * SAMPLE_RATE:
            shifts.append((shift_s, frame_segments(audio[shift:])))
    return shifts


def best_of_shifts(
    found: list[SequenceMatch | None], evidence_tie: float = EVIDENCE_TIE
) -> SequenceMatch | None:
    """The closest fit (mean similarity) among the shifts whose evidence ties with the most;
    alignments with non-finite numbers are left out, so any evidence values give an answer."""
    finite = [f for f in found if f is not None and np.isfinite([f.evidence, f.score]).all()]
    if not finite:
        return None
    most = max(f.evidence for f in finite)
    tie = most - (1.0 - evidence_tie) * abs(most)  # the best itself always ties, whatever its sign
    return max((f for f in finite if f.evidence >= tie), key=lambda f: f.score)


def _disagree(found: list[SequenceMatch | None]) -> bool:
    """Whether the shifts' alignments name other tracks or starts over half a hop apart."""
    matches = [f for f in found if f is not None]
    return any(m.track != matches[0].track or abs(m.offset_s - matches[0].offset_s) > HOP_S / 2
               for m in matches[1:])  # fmt: skip


def _confident(found: SequenceMatch | None) -> bool:
    return found is not None and found.confidence >= CONFIDENCE_THRESHOLD


@dataclass
class _Play:
    """Consecutive track-list windows that agree: one play of one track."""

    first: int  # first recording segment
    end: int  # one past the last recording segment
    match: SequenceMatch  # the match of the first window
    confidence: float  # the best window's

    def extend(self, start: int, end: int, found: SequenceMatch) -> bool:
        """Take in an overlapping window of the same play; False if it is another play."""
        # Stored segment minus recording segment stays constant while one play goes on.
        drift = (found.start_segment - start) - (self.match.start_segment - self.first)
        same_track = found.track == self.match.track and abs(drift) <= TRACKLIST_DRIFT
        if not same_track or start > self.end + TRACKLIST_GAP:
            return False
        self.end = end
        self.confidence = max(self.confidence, found.confidence)
        return True
