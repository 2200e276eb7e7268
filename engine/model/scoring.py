"""Every constant a calibration depends on, in one place and stored with it.

The harness (`nfp eval`) calibrates the evidence a query needs under these values; a checkpoint
keeps them in its calibration (`calibration["scoring"]`), and the engine scores with the stored
values, so changing a default here cannot silently invalidate a shipped model. A calibration
that names a constant this engine does not know is refused (CheckpointError).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from engine.core.audio import SAMPLE_RATE

TOP_K = 20  # neighbours per query segment; the k-th is that segment's noise floor
MIN_COVERAGE = 0.5  # share of the usable query segments an alignment must cover
# Chance similarity depends on library size: the k-th neighbour of a segment in a small library
# is a poorer match than in the ~9 h library the thresholds were calibrated on, which would
# inflate every margin. So the floor is also never below the BACKGROUND_K-th neighbour among
# BACKGROUND_ROWS fingerprints of other music that travel with the checkpoint.
BACKGROUND_ROWS = 16384  # ≈ 2.3 h of music
BACKGROUND_K = 5  # TOP_K × BACKGROUND_ROWS / 64k rows (the calibration library): same quantile
# The background also holds fingerprints of rooms with no music, after the music (the train half
# of the degradation bank: noise, voices, rooms, microphones, equally at each harness level): a
# query segment's floor is never below its best match among them either, so a quiet, noise-like
# passage of a library track earns no evidence from a room where nothing plays. Measured with
# the scnn-d128-quiet candidate on a 4.2 h library of the unseen packages (900 queries of such
# rooms, 600 of library music at mid and high level, 1-5 s): 26 rooms named a track with the
# music floor alone, 4 with this one, and 2 of 600 library queries fewer were named; their 5th
# best instead of the best (as the music's) left 15. Stored with the calibration, since the rows
# travel with the checkpoint's background.
ROOM_ROWS = 2100
ROOM_K = 1
QUERY_SHIFTS_S = (0.0, 0.1, 0.2, 0.3, 0.4)  # sub-hop starts tried for a short file query
# From 5 s on, two starts half a hop apart find the track and its offset as often as five, for
# 2/5 of the encoder's work: on 200 noisy queries each (bench/bench_shifts.py) song / exact rates
# were .98 / .96 at 5 s and .99 / .98 at 10 s both ways. At 2 s, two lost 1 % song, 2 % exact.
LONG_QUERY_S = 5.0
LONG_QUERY_SHIFTS_S = (0.0, 0.25)
# Shifts whose evidence is within this share of the best are ties, broken by the closest fit
# (mean similarity): a repeated phrase elsewhere in a track can gather as much evidence.
EVIDENCE_TIE = 0.9
SILENCE_RMS = 1e-3  # ≈ -60 dBFS: quieter segments are left out of a query
# A long query whose two shifts disagree (another track, or starts over half a hop apart) is
# ambiguous: a repeated phrase that lies nearer the stored grid in one shift can outscore the
# true place seen off the grid in the other. Such a query also tries the short query's shifts.
ESCALATE_SHIFTS = True
# A candidate track's segment is measured against the best score any *other* music reaches at
# that segment (the nearest neighbour of another track, never below the floor above), not only
# the k-th neighbour: a segment counts where the track beats all other music there, the ratio
# test of feature matching. Harness, shipped d = 128, unseen packages, mid level, right track
# named confidently at 1 / 2 / 3 / 5 / 10 s: 44 / 76.5 / 89 / 96 / 97.5 % with the k-th
# neighbour's floor, 51.5 / 83.5 / 88 / 92 / 96.5 % with this one (high 2 s 58 → 67.5 %);
# false positives at 3-10 s 0.29 → 0.38 % (docs/training.md).
OTHER_MUSIC_FLOOR = True
# Constants added after calibrations began storing their scoring, with the value every earlier
# calibration was made under: a calibration that does not name one was not made with today's.
INTRODUCED_LATER = {"escalate_shifts": False, "other_music_floor": False, "room_rows": 0}


@dataclass(frozen=True)
class Scoring:
    """How a query's evidence is computed: the values a calibration was made under."""

    top_k: int = TOP_K
    min_coverage: float = MIN_COVERAGE
    background_k: int = BACKGROUND_K
    query_shifts_s: tuple[float, ...] = QUERY_SHIFTS_S
    long_query_s: float = LONG_QUERY_S
    long_query_shifts_s: tuple[float, ...] = LONG_QUERY_SHIFTS_S
    evidence_tie: float = EVIDENCE_TIE
    silence_rms: float = SILENCE_RMS
    escalate_shifts: bool = ESCALATE_SHIFTS
    other_music_floor: bool = OTHER_MUSIC_FLOOR
    room_rows: int = ROOM_ROWS  # the background's last rows: rooms with no music
    room_k: int = ROOM_K

    def shifts_s(self, n_samples: int) -> tuple[float, ...]:
        """The sub-hop starts to try for a query of n_samples at SAMPLE_RATE."""
        long = n_samples >= self.long_query_s * SAMPLE_RATE
        return self.long_query_shifts_s if long else self.query_shifts_s

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_calibration(cls, calibration: dict[str, Any] | None) -> Scoring:
        """The scoring a calibration was made under. Where it stores none, today's defaults
        but for the constants introduced later (every calibration made before scoring was
        stored used those values); where it names a constant, the named value.

        Raises ValueError naming the problem for unknown constants or values of a wrong type.
        """
        stored = (calibration or {}).get("scoring")
        if stored is None:
            return cls(**INTRODUCED_LATER)
        if not isinstance(stored, dict):
            raise ValueError(f"scoring is a {type(stored).__name__}, not a dict")
        stored = {**INTRODUCED_LATER, **stored}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(stored) - set(known))
        if unknown:
            raise ValueError(f"made under scoring constants this engine does not know: "
                             f"{', '.join(unknown)} (upgrade nfp, or re-run nfp eval)")  # fmt: skip
        values = {}
        for name, value in stored.items():
            default = getattr(cls, name)
            try:
                values[name] = _typed(default, value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"scoring {name} = {value!r}: {e}") from e
        return cls(**values)


def _typed(default: object, value: object) -> object:
    """value as the type of the constant's default; TypeError or ValueError if it is not one."""
    if isinstance(default, tuple):
        return tuple(float(v) for v in value)
    if isinstance(default, bool) and not isinstance(value, bool):
        raise TypeError(f"{value!r} is not true or false")
    return type(default)(value)


def is_loud(segments: np.ndarray, silence_rms: float = SILENCE_RMS) -> np.ndarray:
    """Which segments float32 (L, n) carry sound, bool (L,): silence must not count as a match."""
    return segment_rms(segments) > silence_rms


def segment_rms(segments: np.ndarray) -> np.ndarray:
    """RMS float32 (L,) of segments float32 (L, n)."""
    return np.sqrt(np.einsum("ln,ln->l", segments, segments) / segments.shape[1])
