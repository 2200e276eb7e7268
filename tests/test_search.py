from dataclasses import replace

import numpy as np
import pytest

from engine.core.audio import SAMPLE_RATE
from engine.library.index import VectorIndex
from engine.library.segments import SegmentMap
from engine.model.checkpoint import default_checkpoint_path
from engine.model.load import load_checkpoint
from engine.model.scoring import (
    BACKGROUND_ROWS,
    LONG_QUERY_S,
    LONG_QUERY_SHIFTS_S,
    QUERY_SHIFTS_S,
    TOP_K,
    Scoring,
)
from engine.query.recognize import Recognizer, best_of_shifts, shifted_segments
from engine.query.search import (
    CONFIDENCE_THRESHOLD,
    Background,
    SequenceMatch,
    confidence_from_evidence,
    evidence_threshold,
    match_sequence,
    noise_floor,
    other_music_floors,
)
from tests.support.vectors import unit_vectors

LENGTHS = [400, 250, 600, 300]


@pytest.fixture(scope="module")
def shipped_calibration() -> dict:
    """The shipped default checkpoint's own calibration, read from the file."""
    return load_checkpoint(default_checkpoint_path()).evaluation["calibration"]


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
    return noise_floor(query, scores, Background(background))


def test_the_background_floor_is_the_kth_best_score_and_nothing_for_a_broken_row(rng):
    """faiss's k-th best of the background equals numpy's product and partition, a query row
    that is not finite gets a floor nothing beats, and a background of fewer than k rows is
    no background."""
    background = music_like_vectors(rng, 300)
    query = music_like_vectors(rng, 7)
    query[3] = np.nan
    kth = Background(background, 5).kth(query)
    product = np.nan_to_num(query @ background.T, nan=-np.inf)
    expected = -np.partition(-product, 4, axis=1)[:, 4]
    np.testing.assert_allclose(np.delete(kth, 3), np.delete(expected, 3), atol=1e-6)
    assert kth[3] == 1.0 and kth.dtype == np.float32
    assert Background.of(background[:4], Scoring(room_rows=0)) is None
    assert Background.of(None, Scoring()) is None


def test_a_room_raises_the_floor_to_its_best_match_among_the_rooms(rng):
    """The background's last rows are rooms with no music: a query segment that sounds like one
    of them gets that room's score as its floor (room_k = 1), music keeps its 5th best."""
    music, rooms = music_like_vectors(rng, 200), unit_vectors(rng, 30, 64)
    background = Background.of(np.concatenate([music, rooms]), Scoring(room_rows=30))
    query = np.stack([rooms[7], music[3]])
    music_only = Background(music, 5).kth(query)
    floor = background.kth(query)
    assert floor[0] == pytest.approx(1.0, abs=1e-5) and music_only[0] < 0.5
    assert floor[1] == pytest.approx(music_only[1], abs=1e-6)


def test_the_background_floor_keeps_chance_low_in_a_small_library(rng, shipped_calibration):
    """In a library of a few tracks the k-th neighbour is a poor match, so unrelated music earns
    evidence; the background's floor does not sink with library size, and music still matches."""
    library = music_like_vectors(rng, 60)
    index, segments = VectorIndex.build(library), SegmentMap.from_lengths([30, 30])
    background = music_like_vectors(rng, BACKGROUND_ROWS)
    stranger = music_like_vectors(rng, 9)
    bare = match_sequence(stranger, index, segments, calibration=shipped_calibration)
    floored = match_sequence(stranger, index, segments, calibration=shipped_calibration,
                             floor=floor_of(stranger, index, background))  # fmt: skip
    assert bare.confidence >= CONFIDENCE_THRESHOLD > floored.confidence
    query = noisy(rng, library[35:44], 0.02)
    planted = match_sequence(query, index, segments, calibration=shipped_calibration,
                             floor=floor_of(query, index, background))  # fmt: skip
    assert (planted.track, planted.start_segment) == (1, 5)
    assert planted.confidence >= CONFIDENCE_THRESHOLD


def test_the_other_music_floor_is_the_best_neighbour_of_another_track(rng):
    """Two tracks of three rows; per candidate and query segment, the best neighbour of the
    other track where the candidate's aligned row is a neighbour, else the floor."""
    vectors, segments = unit_vectors(rng, 6, 16), SegmentMap.from_lengths([3, 3])
    scores = np.array([[0.9, 0.8, 0.5], [0.7, 0.6, 0.2]], np.float32)
    ids = np.array([[0, 1, 3], [4, 5, 2]])
    floor = np.array([0.1, 0.3], np.float32)
    starts = np.array([0, 3])  # tracks 0 and 1: aligned rows 0, 1 and 3, 4
    floors = other_music_floors(scores, ids, vectors, segments, starts, floor)
    np.testing.assert_allclose(floors, [[0.5, 0.3], [0.9, 0.3]])
    foreign = np.array([[0, -1, 1]])  # another shard's row is other music
    floors = other_music_floors(scores[:1], foreign, vectors, segments, starts[:1], floor[:1])
    np.testing.assert_allclose(floors, [[0.8]])


@pytest.mark.parametrize("length", [1, 9])
def test_a_song_twice_in_the_library_is_still_named(database, rng, length):
    """The same music as two tracks (an album's and a compilation's) must not cancel itself out
    under the other-music floor, while another track's chance neighbours still count."""
    vectors, _, _ = database
    copy = noisy(rng, vectors[LENGTHS[0] : LENGTHS[0] + LENGTHS[1]], 0.02)  # track 1 again
    twice = np.concatenate([vectors, copy])
    index, segments = VectorIndex.build(twice), SegmentMap.from_lengths([*LENGTHS, LENGTHS[1]])
    query = noisy(rng, vectors[LENGTHS[0] + 100 : LENGTHS[0] + 100 + length], 0.08)
    once = match_sequence(query, VectorIndex.build(vectors), SegmentMap.from_lengths(LENGTHS),
                          other_music_floor=True)  # fmt: skip
    found = match_sequence(query, index, segments, other_music_floor=True)
    assert found.track in (1, len(LENGTHS)) and found.start_segment == 100
    assert found.evidence >= 0.8 * once.evidence > 0
    stranger = match_sequence(unit_vectors(rng, length, 64), index, segments,
                              other_music_floor=True)  # fmt: skip
    assert stranger.evidence < 0.5 * found.evidence


def test_removed_rows_never_match(rng):
    vectors = unit_vectors(rng, 100, 16)
    segments = SegmentMap.from_tracks(np.array([50]), np.array([50]), 100)  # rows 0-49 removed
    found = match_sequence(vectors[10:15], VectorIndex.build(vectors), segments)
    assert found.track == 0 and found.confidence < CONFIDENCE_THRESHOLD


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


# ---- numbers that are not finite never win (the AMX NaN, damaged rows) --------------------
def test_non_finite_query_rows_get_no_neighbours_and_count_for_nothing(database, rng):
    vectors, index, segments = database
    query = noisy(rng, vectors[segments.first[2] + 40 : segments.first[2] + 49], 0.05)
    clean = match_sequence(query, index, segments)
    query[[1, 4]] = np.nan
    query[6] = np.inf
    scores, ids = index.search(query, TOP_K)
    assert (ids[[1, 4, 6]] == -1).all() and np.isneginf(scores[[1, 4, 6]]).all()
    found = match_sequence(query, index, segments)
    assert (found.track, found.start_segment) == (clean.track, clean.start_segment)
    assert found.n_query_segments == 6
    assert np.isfinite([found.score, found.evidence, found.offset_s]).all()
    assert match_sequence(np.full((5, 64), np.nan, np.float32), index, segments) is None


def test_non_finite_stored_rows_never_rank_first(rng):
    """Rows a damaged file (or the old AMX bug) left as NaN or huge: never the answer."""
    vectors = unit_vectors(rng, 300, 32)
    query = noisy(rng, vectors[200:209], 0.05)
    broken = vectors.copy()
    broken[20:40] = np.nan
    segments = SegmentMap.from_lengths([100, 100, 100])
    found = match_sequence(query, VectorIndex.build(broken), segments)
    assert (found.track, found.start_segment) == (2, 0)
    assert np.isfinite([found.score, found.evidence, found.confidence]).all()


def test_missing_candidates_are_no_floor(rng):
    """Fewer rows than k: the missing neighbours (-inf) must not sink the noise floor to -inf
    and make every margin infinite."""
    vectors = unit_vectors(rng, 6, 16)
    index = VectorIndex.build(vectors)
    scores, ids = index.search(vectors[:3], TOP_K)
    assert (ids[:, 6:] == -1).all() and np.isneginf(scores[:, 6:]).all()
    floor = noise_floor(vectors[:3], scores)
    assert np.isfinite(floor).all() and (floor >= -1.0).all()
    found = match_sequence(vectors[:3], index, SegmentMap.from_lengths([6]))
    assert np.isfinite(found.evidence) and found.evidence <= 3 * 2.0


def _shift(evidence: float, score: float) -> SequenceMatch:
    return SequenceMatch(0, 0, 0.0, score, evidence, 0.0, 9)


@pytest.mark.parametrize(
    ("evidence", "scores", "winner"),
    [
        ([np.nan, np.nan], [0.5, 0.6], None),
        ([-1.0, -2.0, -1.05], [0.1, 0.9, 0.5], 2),
        ([np.nan, 3.0, 2.9], [0.9, 0.2, 0.3], 2),
        ([np.inf, 1.0], [0.5, 0.4], 1),
        ([1.0, 1.0], [np.nan, 0.4], 1),
        ([0.0, 0.0], [0.3, 0.4], 1),
    ],
)
def test_the_shift_choice_never_raises_on_any_evidence(evidence, scores, winner):
    found = [_shift(e, s) for e, s in zip(evidence, scores, strict=True)]
    best = best_of_shifts([*found, None])
    assert best is (None if winner is None else found[winner])


def test_long_queries_try_two_shifts_and_short_ones_five():
    scoring = Scoring()
    assert scoring.shifts_s(int(4.9 * SAMPLE_RATE)) == QUERY_SHIFTS_S and len(QUERY_SHIFTS_S) == 5
    assert scoring.shifts_s(int(LONG_QUERY_S * SAMPLE_RATE)) == LONG_QUERY_SHIFTS_S == (0.0, 0.25)
    starts = [shift for shift, _ in shifted_segments(np.zeros(SAMPLE_RATE, np.float32))]
    assert starts == [0.0]  # a 1 s query has room for no other start


def test_a_calibration_scores_with_the_constants_it_was_made_under(tiny_checkpoint) -> None:
    """Stored scoring constants win over the defaults, so a change of default cannot shift a
    shipped calibration; none stored means the defaults (what older calibrations used)."""
    stored = {**Scoring().to_dict(), "top_k": 3, "query_shifts_s": [0.0, 0.2]}
    assert Scoring.from_calibration({"scoring": stored}) == replace(
        Scoring(), top_k=3, query_shifts_s=(0.0, 0.2)
    )
    # what calibrations before them used
    legacy = replace(Scoring(), escalate_shifts=False, other_music_floor=False, room_rows=0)
    assert Scoring.from_calibration({"evidence_threshold": {"1": 0.3}}) == legacy
    assert Scoring.from_calibration({"scoring": {"top_k": 20}}) == legacy
    assert Scoring.from_calibration({"scoring": Scoring().to_dict()}) == Scoring()
    with pytest.raises(ValueError, match="escalate_shifts"):
        Scoring.from_calibration({"scoring": {"escalate_shifts": "yes"}})
    calibrated = replace(tiny_checkpoint, evaluation={"calibration": {"scoring": stored}})
    fps = unit_vectors(np.random.default_rng(3), 40, tiny_checkpoint.d)
    searched = (VectorIndex.build(fps), SegmentMap.from_lengths([40]), [])
    recognizer = Recognizer(None, calibrated, searched=searched)
    scores, ids, _ = recognizer.neighbours(fps[:4])
    assert scores.shape == ids.shape == (4, 3)
    assert recognizer.scoring.shifts_s(SAMPLE_RATE * 2) == (0.0, 0.2)


def test_a_calibration_made_under_unknown_constants_is_refused(
    tiny_checkpoint_path, tmp_path
) -> None:
    from engine.core.errors import CheckpointError
    from tests.support.tiny import make_tiny_checkpoint

    calibration = {"evidence_threshold": {"1": 0.3}, "scoring": {"top_k": 20, "hop_jitter": 2}}
    path = make_tiny_checkpoint(tmp_path / "odd.pt", evaluation={"calibration": calibration})
    with pytest.raises(CheckpointError, match="odd.pt.*hop_jitter"):
        load_checkpoint(path, backend="torch")


def _fake_match(track: int, offset_s: float, evidence: float, score: float) -> SequenceMatch:
    return SequenceMatch(
        track=track, start_segment=round(offset_s / 0.5), offset_s=offset_s, score=score,
        evidence=evidence, confidence=0.9, n_query_segments=9,
    )  # fmt: skip


@pytest.mark.parametrize(
    "first, second, escalates",
    [((0, 6.3), (0, 6.4), False), ((0, 6.3), (0, 0.7), True), ((0, 6.3), (1, 6.3), True)],
)
def test_a_long_query_whose_shifts_disagree_tries_the_short_shifts(
    tiny_checkpoint, first, second, escalates
):
    """Two shifts of a 5 s query on other tracks or places (a repeat nearer the grid in one of
    them) try the short query's shifts too, and the best of all of them wins."""
    fps = unit_vectors(np.random.default_rng(3), 40, tiny_checkpoint.d)
    searched = (VectorIndex.build(fps), SegmentMap.from_lengths([20, 20]), [])
    tried = []

    class Spy(Recognizer):
        def _shift_matches(self, shifts):
            tried.extend(shift for shift, _ in shifts)
            if len(tried) == 2:
                return [_fake_match(*first, 2.9, 0.90), _fake_match(*second, 2.6, 0.90)]
            return [_fake_match(*first, 3.2, 0.95)] * len(shifts)

    calibrated = replace(
        tiny_checkpoint, evaluation={"calibration": {"scoring": Scoring().to_dict()}}
    )
    found = Spy(None, calibrated, searched=searched).best_match(
        np.zeros(5 * SAMPLE_RATE, np.float32)
    )
    short = [s for s in QUERY_SHIFTS_S if s not in LONG_QUERY_SHIFTS_S]
    assert tried == [*LONG_QUERY_SHIFTS_S, *(short if escalates else [])]
    assert found.evidence == (3.2 if escalates else 2.9)
