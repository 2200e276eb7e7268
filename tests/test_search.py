import numpy as np
import pytest
from test_index import unit_vectors

from engine.index import VectorIndex
from engine.search import (
    BACKGROUND_ROWS,
    CONFIDENCE_THRESHOLD,
    TOP_K,
    SegmentMap,
    confidence_from_evidence,
    evidence_threshold,
    match_sequence,
    noise_floor,
)

LENGTHS = [400, 250, 600, 300]
SHIPPED_CALIBRATION = {"evidence_threshold": {"1": 0.18, "9": 0.46, "19": 0.64}}  # ≈ the d128's


@pytest.fixture
def database(rng):
    vectors = unit_vectors(rng, sum(LENGTHS), 64)
    return vectors, VectorIndex.build(vectors), SegmentMap.from_lengths(LENGTHS)


def noisy(rng, v: np.ndarray, sigma: float) -> np.ndarray:
    q = v + sigma * rng.standard_normal(v.shape).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "track, start, length", [(0, 0, 9), (2, 377, 9), (1, 240, 10), (3, 150, 1)]
)
def test_planted_query_comes_back_at_its_offset(database, rng, track, start, length):
    vectors, index, segments = database
    first = segments.first[track]
    query = noisy(rng, vectors[first + start : first + start + length], 0.08)
    found = match_sequence(query, index, segments)
    assert found.track == track and found.start_segment == start
    assert found.offset_s == pytest.approx(start * 0.5, abs=0.25)
    assert found.confidence > CONFIDENCE_THRESHOLD


def test_query_past_the_end_of_a_track_aligns_with_what_exists(database, rng):
    vectors, index, segments = database
    tail = vectors[segments.first[1] + 245 : segments.first[1] + 250]
    query = np.concatenate([noisy(rng, tail, 0.05), unit_vectors(rng, 4, 64)])
    found = match_sequence(query, index, segments)
    assert (found.track, found.start_segment) == (1, 245)


def test_unrelated_query_has_low_evidence(database, rng):
    _, index, segments = database
    found = match_sequence(unit_vectors(rng, 9, 64), index, segments)
    assert found.confidence < CONFIDENCE_THRESHOLD


def test_evidence_grows_with_query_length(database, rng):
    vectors, index, segments = database
    evidence = [
        match_sequence(noisy(rng, vectors[100 : 100 + n], 0.3), index, segments).evidence
        for n in (2, 5, 10, 19)
    ]
    assert evidence == sorted(evidence)


def music_like_vectors(rng, n: int, d: int = 64) -> np.ndarray:
    """Unit vectors that share a direction, as fingerprints of similar-sounding music do."""
    shared = np.ones(d, np.float32) / np.sqrt(d)
    v = shared + 0.25 * rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def floor_of(query: np.ndarray, index: VectorIndex, background: np.ndarray) -> np.ndarray:
    scores, _ = index.search(query, TOP_K)
    return noise_floor(query, scores, background)


def test_the_background_floor_keeps_chance_low_in_a_small_library(rng):
    """In a library of a few tracks the k-th neighbour is a poor match, so unrelated music earns
    evidence; the background's floor does not sink with library size, and music still matches."""
    library = music_like_vectors(rng, 60)
    index, segments = VectorIndex.build(library), SegmentMap.from_lengths([30, 30])
    background = music_like_vectors(rng, BACKGROUND_ROWS)
    stranger = music_like_vectors(rng, 9)
    bare = match_sequence(stranger, index, segments, calibration=SHIPPED_CALIBRATION)
    floored = match_sequence(stranger, index, segments, calibration=SHIPPED_CALIBRATION,
                             floor=floor_of(stranger, index, background))  # fmt: skip
    assert bare.confidence >= CONFIDENCE_THRESHOLD > floored.confidence
    query = noisy(rng, library[35:44], 0.02)
    planted = match_sequence(query, index, segments, calibration=SHIPPED_CALIBRATION,
                             floor=floor_of(query, index, background))  # fmt: skip
    assert (planted.track, planted.start_segment) == (1, 5)
    assert planted.confidence >= CONFIDENCE_THRESHOLD


def test_removed_rows_never_match(rng):
    vectors = unit_vectors(rng, 100, 16)
    segments = SegmentMap.from_tracks(np.array([50]), np.array([50]), 100)  # rows 0-49 removed
    found = match_sequence(vectors[10:15], VectorIndex.build(vectors), segments)
    assert found is None or (found.track == 0 and found.confidence < CONFIDENCE_THRESHOLD)


def test_empty_query_or_index_gives_none(database):
    _, index, segments = database
    assert match_sequence(np.zeros((0, 64), np.float32), index, segments) is None


def test_confidence_is_one_half_at_the_calibrated_threshold():
    calibration = {"evidence_threshold": {"1": 0.2, "9": 0.8}}
    assert evidence_threshold(5, calibration) == pytest.approx(0.5)
    assert confidence_from_evidence(0.5, 5, calibration) == pytest.approx(0.5)
    assert confidence_from_evidence(0.0, 5, calibration) == 0.0
    assert confidence_from_evidence(2.0, 5, calibration) > confidence_from_evidence(
        1.0, 5, calibration
    )
