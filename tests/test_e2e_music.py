"""End to end on real music: the `nfp` command with the shipped checkpoint on Debian's
wesnoth-1.16-music (installed by the test setup script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.core.audio import SAMPLE_RATE, load_audio
from tests.support.audio_files import write_audio

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
N_TRACKS = 10
EXCERPT_S = 5.0
NOISY_SNR_DB = 10.0
NOISY_MIN_HIT_RATE = 0.8  # measured: the trained default 1.0, the untrained placeholder 0.0


def nfp(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NFP_CHECKPOINT_DIR"}  # the shipped one
    cmd = [sys.executable, "-m", "engine.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, list[Path]]:
    tracks = sorted(WESNOTH_MUSIC.glob("*.ogg"))[:N_TRACKS]
    if len(tracks) < N_TRACKS:
        pytest.fail(
            f"{WESNOTH_MUSIC}: needs the Debian package wesnoth-1.16-music (scripts/setup.sh)"
        )
    root = tmp_path_factory.mktemp("e2e")
    (root / "music").mkdir()
    for track in tracks:
        (root / "music" / track.name).symlink_to(track)
    db = root / "db"
    done = nfp("index", str(root / "music"), "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert f"indexed {N_TRACKS}, unchanged 0" in done.stdout
    return db, [root / "music" / t.name for t in tracks]


@pytest.fixture(scope="module")
def excerpts(library, tmp_path_factory) -> list[tuple[Path, Path, str, float]]:
    """(clean wav, noisy wav, track path, true offset) per library track, at random offsets."""
    _, tracks = library
    rng = np.random.default_rng(2026)
    out = tmp_path_factory.mktemp("queries")
    made = []
    for i, track in enumerate(tracks):
        audio = load_audio(track)
        offset = float(rng.uniform(0, len(audio) / SAMPLE_RATE - EXCERPT_S))
        start = int(offset * SAMPLE_RATE)
        clean = audio[start : start + int(EXCERPT_S * SAMPLE_RATE)]
        noise_power = np.mean(clean**2) / 10 ** (NOISY_SNR_DB / 10)
        noisy = clean + rng.standard_normal(len(clean)).astype(np.float32) * np.sqrt(noise_power)
        made.append(
            (
                write_audio(out / f"{i}-clean.wav", clean, SAMPLE_RATE),
                write_audio(out / f"{i}-noisy.wav", np.clip(noisy, -1, 1), SAMPLE_RATE),
                str(track),
                offset,
            )
        )
    return made


def identify(db: Path, files: list[Path]) -> list[dict]:
    done = nfp("identify", *map(str, files), "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def is_hit(record: dict, track: str, offset: float) -> bool:
    match = record["match"]
    return match is not None and match["path"] == track and abs(match["offset_s"] - offset) <= 0.5


def plays_the_same_music(record: dict, track: str, offset: float) -> bool:
    """Whether the reported place of the right track holds the excerpt's very music: a loop
    repeated note for note (waveforms correlated ≥ 0.95 within a hop of the reported offset)."""
    match = record["match"]
    if match is None or match["path"] != track:
        return False
    audio = load_audio(track)
    n = int(EXCERPT_S * SAMPLE_RATE)
    excerpt = audio[int(offset * SAMPLE_RATE) :][:n]
    reported = int(match["offset_s"] * SAMPLE_RATE)
    starts = range(max(0, reported - SAMPLE_RATE // 2), reported + SAMPLE_RATE // 2, 8)
    windows = [audio[s : s + n] for s in starts if len(audio[s : s + n]) == n]
    return max(float(np.corrcoef(excerpt, w)[0, 1]) for w in windows) >= 0.95


def test_clean_excerpts_all_come_back_with_track_and_offset(library, excerpts):
    """Each at its place, or at a place where the track plays the same music note for note (a
    loop of frantic-old.ogg repeats 5.6 s apart): either is right."""
    db, _ = library
    results = identify(db, [clean for clean, _, _, _ in excerpts])
    for record, (_, _, track, offset) in zip(results, excerpts, strict=True):
        right = is_hit(record, track, offset) or plays_the_same_music(record, track, offset)
        assert right, (record, track, offset)


def test_excerpts_with_white_noise_at_10_db_snr(library, excerpts):
    db, _ = library
    results = identify(db, [noisy for _, noisy, _, _ in excerpts])
    hits = [is_hit(r, t, o) for r, (_, _, t, o) in zip(results, excerpts, strict=True)]
    print(f"\nnoisy (white noise, {NOISY_SNR_DB:.0f} dB SNR) hit rate: {np.mean(hits):.2f}")
    assert np.mean(hits) >= NOISY_MIN_HIT_RATE


def test_tracklist_of_three_excerpts_with_gaps(library, tmp_path):
    db, tracks = library
    picks = [(tracks[1], 30.0), (tracks[6], 10.0), (tracks[3], 60.0)]
    gap = np.zeros(3 * SAMPLE_RATE, np.float32)
    parts = []
    for track, start in picks:
        audio = load_audio(track)
        parts += [audio[int(start * SAMPLE_RATE) : int((start + 12) * SAMPLE_RATE)], gap]
    mix = write_audio(tmp_path / "mix.flac", np.concatenate(parts), SAMPLE_RATE)
    done = nfp("tracklist", str(mix), "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)["tracks"]
    assert [e["path"] for e in entries] == [str(t) for t, _ in picks]
    for i, (entry, (_, start)) in enumerate(zip(entries, picks, strict=True)):
        assert entry["start_s"] == pytest.approx(i * 15.0, abs=1.5)
        assert entry["end_s"] == pytest.approx(i * 15.0 + 12.0, abs=1.5)
        assert entry["offset_s"] == pytest.approx(start + entry["start_s"] - i * 15.0, abs=1.0)


def test_a_song_twice_in_the_library_is_still_named(library, excerpts, tmp_path):
    """The same music as two files (an Ogg and a FLAC copy, as an album's and a compilation's)
    must not cancel itself out: the copy is not "other music" to its twin."""
    _, tracks = library
    music = tmp_path / "music"
    music.mkdir()
    for track in tracks[:3]:
        (music / track.name).symlink_to(track.resolve())
    copy = write_audio(music / "copy.flac", load_audio(tracks[0]), SAMPLE_RATE)
    db = tmp_path / "db"
    assert nfp("index", str(music), "--db", str(db)).returncode == 0
    clean, noisy, _, offset = excerpts[0]
    names = {str(music / tracks[0].name), str(copy)}
    for record in identify(db, [clean, noisy]):
        match = record["match"]
        assert match is not None and match["path"] in names, record
        assert abs(match["offset_s"] - offset) <= 0.5, (record, offset)


def test_a_room_with_no_music_is_not_named(library, tmp_path):
    """A track that ends in 20 s of near-silence (a fade's hiss at -55 dBFS, above the -60 dBFS
    of digital silence) must not make a query of room noise name it: each segment is normalised
    by its own maximum, so the hiss looked like any noise, and stored, it matched a recording
    with no music in it."""
    _, tracks = library
    rng = np.random.default_rng(7)
    music = tmp_path / "music"
    music.mkdir()
    for track in tracks[:3]:
        (music / track.name).symlink_to(track.resolve())
    hiss = 10 ** (-55 / 20) * rng.standard_normal(20 * SAMPLE_RATE).astype(np.float32)
    ending = np.concatenate([load_audio(tracks[3])[: 20 * SAMPLE_RATE], hiss])
    write_audio(music / "quiet-ending.flac", ending, SAMPLE_RATE)
    db = tmp_path / "db"
    assert nfp("index", str(music), "--db", str(db)).returncode == 0
    room = 0.1 * rng.standard_normal(10 * SAMPLE_RATE).astype(np.float32)
    (record,) = identify(db, [write_audio(tmp_path / "room.wav", room, SAMPLE_RATE)])
    assert record["match"] is None, record
