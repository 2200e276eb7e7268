"""From answers to figures: the per-length calibration on non-library music, top-1 hit rates,
false-positive rates with Wilson intervals, and the evaluation dict checkpoints store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from engine.model.checkpoint import Checkpoint
from engine.query.recognize import Recognizer
from engine.query.search import CONFIDENCE_THRESHOLD, confidence_from_evidence
from training.degrade import LEVELS
from training.outcomes import EXACT_S, NEAR_S, Outcome
from training.protocol import DOMAINS, NO_MUSIC, NONLIBRARY, STRETCH_LEVEL, EvalConfig

# Calibrated false-positive rate on non-library music: below the app's target of 0.5 % measured
# on music the calibration never saw, since a threshold set on one part passes more of another.
TARGET_FPR = 0.0025
MAX_FPR = 0.005  # the target on non-library music, queries of 3 s and longer (issue 22)
WILSON_Z = 1.96  # 95 % interval


def calibrate(outcomes: Sequence[Outcome], part: str, target_fpr: float = TARGET_FPR) -> dict:
    """Evidence thresholds per query length (in segments) passing target_fpr of the part's
    non-library queries, pooled over levels: {"evidence_threshold": {"n": value}, …}."""
    table = {}
    for n_seg in sorted({o.n_segments for o in outcomes}):
        ev = np.concatenate([o.evidence for o in outcomes
                             if o.kind == part and o.n_segments == n_seg])  # fmt: skip
        # Strictly above the (1 - fpr) quantile; never zero, or every query would pass.
        table[str(n_seg)] = max(float(np.quantile(ev, 1 - target_fpr, method="higher")), 1e-3)
    return {"evidence_threshold": table, "target_fpr": target_fpr, "calibrated_on": part}


def accepted(outcome: Outcome, calibration: dict) -> np.ndarray:
    """Which queries the app would report (confidence >= CONFIDENCE_THRESHOLD), bool (Q,)."""
    pairs = zip(outcome.evidence, outcome.used_segments, strict=True)
    conf = np.array([confidence_from_evidence(e, int(n), calibration) for e, n in pairs])
    return (conf >= CONFIDENCE_THRESHOLD) & (outcome.found_track >= 0)


def hit_rates(outcome: Outcome, calibration: dict) -> dict[str, float]:
    """Top-1 rates of library queries: exact / near / song, and the answers the app reports."""
    song = outcome.found_track == outcome.true_track
    error = outcome.offset_error_s
    exact = error <= EXACT_S
    sure = accepted(outcome, calibration)
    return {
        "exact": float(np.mean(song & exact)),
        "near": float(np.mean(song & (error <= NEAR_S))),
        "song": float(np.mean(song)),
        # exact, or a wrong place holding the same music (a loop): the best any system can do
        "exact_or_repeat": float(np.mean(song & (exact | outcome.repeat))),
        "confident": float(np.mean(sure)),  # the app names a track at all
        "song_confident": float(np.mean(song & sure)),  # … and it is the right one
        "exact_confident": float(np.mean(song & sure & (exact | outcome.repeat))),
        # Median |offset_s - true start| of right-track answers; None when there are none.
        "offset_error_s": float(np.median(error[song])) if song.any() else None,
        "queries": len(song),
    }


def wilson(k: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a rate of k in n (the normal one fails near 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def false_positives(outcomes: Sequence[Outcome], part: str, calibration: dict) -> dict:
    """The part's confident answers at the calibration: rate, 95 % interval and counts, for
    all its queries and per level."""

    def rate(selected: list[Outcome]) -> dict:
        hits = np.concatenate([accepted(o, calibration) for o in selected])
        lo, hi = wilson(int(hits.sum()), len(hits))
        return {"rate": float(hits.mean()), "ci95": [lo, hi],
                "false": int(hits.sum()), "queries": len(hits)}  # fmt: skip

    measured = [o for o in outcomes if o.kind == part]
    levels = dict.fromkeys(o.level for o in measured)
    lengths = dict.fromkeys(o.length_s for o in measured)
    by_level = {lv: rate([o for o in measured if o.level == lv]) for lv in levels}
    by_length = {f"{s:g}": rate([o for o in measured if o.length_s == s]) for s in lengths}
    long = [o for o in measured if o.length_s >= 3]
    return {"measured_on": part, "all": rate(measured), "by_level": by_level,
            "by_length": by_length, "3s_and_longer": rate(long) if long else None}  # fmt: skip


def summarize(
    outcomes: Sequence[Outcome],
    cfg: EvalConfig,
    checkpoint: Checkpoint,
    recognizer: Recognizer,
    database_hours: float,
    wall_s: float,
) -> dict:
    """The evaluation dict stored in checkpoints and results.json."""
    calibrate_on, measure_on = NONLIBRARY
    calibration = calibrate(outcomes, calibrate_on)
    calibration["scoring"] = recognizer.scoring.to_dict()
    rates: dict[str, dict[str, dict[str, dict]]] = {domain: {} for domain in DOMAINS}
    stretch: dict[str, dict[str, dict]] = {}
    fpr: dict[str, dict[str, float]] = {}
    for o in outcomes:
        key = f"{o.length_s:g}"
        if o.kind in DOMAINS and o.tempo != 1.0:
            stretch.setdefault(f"{o.tempo:g}", {})[key] = hit_rates(o, calibration)
        elif o.kind in DOMAINS:
            rates[o.kind].setdefault(o.level, {})[key] = hit_rates(o, calibration)
        elif o.kind == measure_on:
            fpr.setdefault(o.level, {})[key] = float(np.mean(accepted(o, calibration)))
    measured = false_positives(outcomes, measure_on, calibration)
    swapped = false_positives(outcomes, calibrate_on, calibrate(outcomes, measure_on))
    no_music = any(o.kind == NO_MUSIC for o in outcomes)
    return {
        "calibration": calibration,
        "hit_rates": rates["unseen"],  # the headline: packages the model never trained on
        "hit_rates_in_domain": rates["in-domain"],
        "hit_rates_stretch": {"level": STRETCH_LEVEL, "domain": "unseen", "by_tempo": stretch},
        "false_positive_rate": fpr,
        "false_positive_rate_all": measured["all"]["rate"],
        "false_positive_rate_swapped": swapped["all"]["rate"],
        "false_positives": measured,
        "false_positives_swapped": swapped,
        "false_positives_no_music": (
            false_positives(outcomes, NO_MUSIC, calibration) if no_music else None
        ),
        "protocol": {
            **{k: v for k, v in asdict(cfg).items() if k != "out_dir"},
            "levels_defined": {name: asdict(LEVELS[name]) for name in cfg.levels},
            "database_hours": round(database_hours, 3),
            "confidence_threshold": CONFIDENCE_THRESHOLD,
            "path": "engine.query.recognize.Recognizer.best_match",
        },
        "checkpoint_sha256": checkpoint.sha256,
        "wall_time_s": round(wall_s, 1),
    }
