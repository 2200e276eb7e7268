"""Shared fixtures: a seeded rng, a tiny random encoder, a tiny library of generated tracks, a
virtual microphone."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.virtual_mic import pulseaudio_server
from engine.cli import main
from engine.core.audio import SAMPLE_RATE, load_audio
from engine.model.load import load_checkpoint
from tests.support.audio_files import music_folder, music_like, write_audio
from tests.support.library_helpers import nfp
from tests.support.tiny import TRACK_SECONDS, make_tiny_checkpoint


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ONNX exports a test's checkpoints get on first use are cached for this run only
    (engine.model.load.export_cache_dir follows XDG_CACHE_HOME), never in the user's cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def seeded_torch() -> None:
    """Every test's torch randomness (random inputs, fresh models) is the same on every run."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny scnn (d=64), calibrated so that its confident matches mean something."""
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoint_path: Path):
    return load_checkpoint(tiny_checkpoint_path)


@pytest.fixture(scope="session")
def music_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated tracks in different formats and folders, with tags."""
    root = tmp_path_factory.mktemp("music")
    (root / "album").mkdir()
    specs = [("album/one.flac", "One"), ("album/two.mp3", "Two"), ("three.ogg", "Three")]
    for seed, ((name, title), seconds) in enumerate(zip(specs, TRACK_SECONDS, strict=True)):
        write_audio(
            root / name,
            music_like(seconds, 22050, seed),
            22050,
            tags={"title": title, "artist": "Test Artist", "album": "Tests"},
        )
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture
def eight_tracks(tmp_path: Path) -> Path:
    return music_folder(tmp_path / "eight", 8, 20.0, first_seed=100)


@pytest.fixture
def real_db(tmp_path: Path, music_dir: Path, capsys) -> Path:
    """The generated tracks indexed in place with the real shipped checkpoint, for modules
    whose own `db` is a tiny model's: confident answers."""
    db = tmp_path / "real-db"
    assert main(["index", str(music_dir), "--db", str(db)]) == 0
    capsys.readouterr()
    return db


@pytest.fixture
def music(music_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the generated tracks, free to change."""
    return Path(shutil.copytree(music_dir, tmp_path / "music"))


@pytest.fixture
def query(music: Path, tmp_path: Path) -> Path:
    """5 s from 8 s into album/two.mp3."""
    audio = load_audio(music / "album" / "two.mp3")[8 * SAMPLE_RATE : 13 * SAMPLE_RATE]
    return write_audio(tmp_path / "query.wav", audio, SAMPLE_RATE)


@pytest.fixture
def db(music: Path, tmp_path: Path, capsys) -> Path:
    """A library of the three generated tracks, indexed through the `nfp` command with the
    shipped checkpoint (whose calibration makes its confident answers mean something)."""
    db = tmp_path / "db"
    assert nfp("index", music, "--db", db) == 0
    capsys.readouterr()
    return db


@pytest.fixture(scope="module")
def virtual_mic(tmp_path_factory) -> Iterator[str]:
    """A private PulseAudio server with a null sink `vsink`; its monitor is the input 'pulse'."""
    if not shutil.which("pulseaudio") or not shutil.which("paplay"):
        pytest.fail("needs pulseaudio and pulseaudio-utils (scripts/setup.sh installs them)")
    with pulseaudio_server(tmp_path_factory.mktemp("pulse")) as server:
        yield server
