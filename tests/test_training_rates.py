"""training.rates: an answer's place is judged by its error, not by the segments it rounds to."""

from __future__ import annotations

import numpy as np

from training.outcomes import Outcome
from training.rates import hit_rates


def outcome(found: list[int], offsets: list[float], true_start: float = 21.28) -> Outcome:
    n = len(found)
    return Outcome(level="mid", length_s=5.0, n_segments=9, kind="unseen", tempo=1.0,
                   found_track=np.array(found), true_track=np.zeros(n, np.int64),
                   offset_s=np.array(offsets), true_start_s=np.full(n, true_start),
                   evidence=np.ones(n), score=np.ones(n), used_segments=np.full(n, 9),
                   repeat=np.array([False, False, False, True, False]))  # fmt: skip


def test_exact_near_song_and_repeats_by_offset_error() -> None:
    # 65 ms early across a segment boundary (21.28 s rounds to 21.5, 21.215 to 21.0): exact;
    # 0.4 s off: near; 2 s off: the song only; 2 s off on a repeat; the wrong track.
    rates = hit_rates(outcome([0, 0, 0, 0, 1], [21.215, 21.68, 23.28, 23.28, 21.28]),
                      {"evidence_threshold": {"1": 0.5}})  # fmt: skip
    assert rates["exact"] == 0.2 and rates["near"] == 0.4 and rates["song"] == 0.8
    assert rates["exact_or_repeat"] == 0.4
    assert rates["confident"] == 1.0 and rates["song_confident"] == 0.8
