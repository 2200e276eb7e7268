from pathlib import Path

import numpy as np
import pytest

from engine.core.steps import run_steps
from engine.library.indexing import index_folder
from engine.library.library import Library
from engine.model.fingerprint import Fingerprinter
from engine.query.recognize import Recognizer
from engine.query.stream import LiveMatcher
from tests.support.audio_files import music_like, write_audio
from tests.support.spectral import spectral_checkpoint

RATE = 44100  # a typical device rate: the matcher resamples like file input
CALIBRATION = {"evidence_threshold": {"3": 0.6, "9": 1.0, "19": 1.2}}
SECONDS = 40.0


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory) -> Recognizer:
    root = tmp_path_factory.mktemp("stream")
    (root / "music").mkdir()
    for seed in range(3):
        write_audio(root / "music" / f"song{seed}.wav", music_like(SECONDS, 8000, seed), 8000)
    write_audio(root / "music" / "chorus.wav", chorus(8000), 8000)
    checkpoint = spectral_checkpoint(CALIBRATION)
    library = Library(root / "db")
    run_steps(index_folder(library, root / "music", Fingerprinter(checkpoint)))
    return Recognizer(library, checkpoint)


def chorus(rate: int) -> np.ndarray:
    """A song whose first 8 s come back at 14 s: A B A C, with A 8 s and B, C 6 s long."""
    a, b, c = (music_like(8.0, rate, seed) for seed in (10, 11, 12))
    return np.concatenate([a, b[: 6 * rate], a, c[: 6 * rate]])


def play(matcher: LiveMatcher, audio: np.ndarray, block_s: float = 0.1):
    block = int(block_s * RATE)
    return [matcher.push(audio[i : i + block], RATE) for i in range(0, len(audio), block)]


def song(seed: int, start_s: float, seconds: float) -> np.ndarray:
    return music_like(SECONDS, RATE, seed)[int(start_s * RATE) : int((start_s + seconds) * RATE)]


def test_locks_on_and_follows_the_position(recognizer):
    states = play(LiveMatcher(recognizer), song(1, 6.3, 12.0))
    first = next(i for i, s in enumerate(states) if s.status == "matched")
    assert states[first].heard_s <= 4.0
    for state in states[first:]:
        assert state.match.track.title == "song1"
        assert state.match.offset_s == pytest.approx(6.3 + state.heard_s, abs=0.5)


def test_relocks_when_the_music_jumps(recognizer):
    matcher = LiveMatcher(recognizer)
    play(matcher, song(0, 2.0, 8.0))
    after = play(matcher, song(2, 20.0, 10.0))
    relocked = [s for s in after if s.match and s.match.track.title == "song2"]
    assert relocked and relocked[0].heard_s <= 8.0 + 5.0
    assert after[-1].match.offset_s == pytest.approx(20.0 + 10.0, abs=0.6)


@pytest.mark.parametrize("start_s", [0.0, 14.0])
def test_a_repeat_is_placed_right_once_the_music_parts(recognizer, start_s):
    """While A plays, its two places are one; 2 s after the music parts, the place is right."""
    audio = chorus(RATE)[int(start_s * RATE) : int((start_s + 12.0) * RATE)]
    states = play(LiveMatcher(recognizer), audio)
    assert any(s.status == "matched" for s in states if s.heard_s <= 4.0)
    for state in (s for s in states if s.heard_s >= 10.0):
        assert state.match.track.title == "chorus"
        assert state.match.offset_s == pytest.approx(start_s + state.heard_s, abs=0.5)


def test_music_not_in_the_library_is_no_match(recognizer):
    states = play(LiveMatcher(recognizer), music_like(12.0, RATE, 99))
    assert all(s.match is None for s in states)
    assert states[-1].status == "no_match" and states[0].status == "listening"


def test_level_meter_follows_loudness(recognizer):
    matcher = LiveMatcher(recognizer)
    quiet = matcher.push(np.full(4410, 0.001, np.float32), RATE).level_db
    loud = matcher.push(np.full(4410, 0.5, np.float32), RATE).level_db
    assert quiet == pytest.approx(-60, abs=1) and loud == pytest.approx(-6, abs=1)


def test_tracklist_of_three_excerpts_with_gaps(recognizer, tmp_path: Path):
    gap = np.zeros(3 * 8000, np.float32)
    parts = [(0, 5.0), (2, 12.0), (1, 20.0)]
    audio = np.concatenate([x for seed, start in parts for x in (song_8k(seed, start, 8.0), gap)])
    entries = recognizer.tracklist(audio)
    assert [e.track.title for e in entries] == ["song0", "song2", "song1"]
    for entry, (i, (_, start)) in zip(entries, enumerate(parts), strict=True):
        assert entry.start_s == pytest.approx(i * 11.0, abs=1.5)
        assert entry.end_s == pytest.approx(i * 11.0 + 8.0, abs=1.5)
        assert entry.offset_s == pytest.approx(start + (entry.start_s - i * 11.0), abs=0.6)


def song_8k(seed: int, start_s: float, seconds: float) -> np.ndarray:
    return music_like(SECONDS, 8000, seed)[int(start_s * 8000) : int((start_s + seconds) * 8000)]
