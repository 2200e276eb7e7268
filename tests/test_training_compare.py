"""training.compare: a candidate is adopted only when it beats the base beyond the intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.compare import main, verdict


def results(mid: float, high: float, fpr: float = 0.0) -> dict:
    """A results.json with 200 queries a cell, the same rate at every length."""
    levels = {level: {length: {"song_confident": rate, "queries": 200} for length in ("1", "5")}
              for level, rate in (("mid", mid), ("high", high))}  # fmt: skip
    long = {"rate": fpr, "ci95": [0.0, 0.01], "queries": 1200}
    return {"hit_rates": levels, "hit_rates_in_domain": levels,
            "false_positives": {"all": long, "3s_and_longer": long}}  # fmt: skip


@pytest.mark.parametrize(
    ("candidate", "adopted"),
    [
        (results(0.80, 0.60), True),  # mid 70 -> 80 % on 400 queries: beyond both intervals
        (results(0.73, 0.60), False),  # within the intervals: not shown to be better
        (results(0.80, 0.40), False),  # mid better, high worse beyond its intervals
        (results(0.80, 0.60, fpr=0.01), False),  # too many false positives
    ],
)
def test_adoption_needs_a_better_mid_level_beyond_the_intervals(
    tmp_path: Path, candidate: dict, adopted: bool, capsys: pytest.CaptureFixture
) -> None:
    paths = [tmp_path / "base.json", tmp_path / "candidate.json"]
    for path, result in zip(paths, (results(0.70, 0.55), candidate), strict=True):
        path.write_text(json.dumps(result))
    assert (main([str(p) for p in paths]) == 0) is adopted
    assert ("adopt the candidate" in capsys.readouterr().out) is adopted


def test_verdict_reads_overlapping_intervals_as_the_same() -> None:
    assert verdict((0.60, 0.70), (0.71, 0.80)) == "better"
    assert verdict((0.60, 0.70), (0.50, 0.59)) == "worse"
    assert verdict((0.60, 0.70), (0.69, 0.80)) == "same"
