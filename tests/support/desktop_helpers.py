"""Shared parts of the desktop tests: an isolated app context, a library, a fake microphone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from PySide6.QtCore import QSettings

from engine.core.audio import load_audio
from engine.core.errors import NoInputDeviceError
from engine.core.mic import InputDevice
from engine.core.steps import run_steps
from engine.library.indexing import index_folders
from engine.library.library import Library
from engine.model.encoders import EncoderConfig, register_encoder
from engine.model.export import save_checkpoint
from engine.model.fingerprint import Fingerprinter
from engine.model.load import load_checkpoint
from nfp_desktop.context import AppContext
from nfp_desktop.preferences import Preferences, save_preferences
from tests.support.spectral import SpectralEncoder

SPECTRAL_CALIBRATION = {"evidence_threshold": {"3": 0.6, "9": 1.0, "19": 1.2}}  # as test_stream
FAKE_MIC = InputDevice(
    index=0, name="Fake microphone", channels=1, default_rate=16000.0, is_default=True
)
MIC_RATE = 16000


def spectral_checkpoint_file(path: Path, d: int = 64) -> Path:
    """A checkpoint file of the training-free spectral encoder, which tells melodies apart.

    The app loads checkpoints from files, so the test encoder joins the engine's registry here.
    """
    register_encoder("spectral-test", lambda config: SpectralEncoder(config.d))
    config = EncoderConfig(name="spectral-test", d=d)
    evaluation = {"calibration": SPECTRAL_CALIBRATION}
    save_checkpoint(path, SpectralEncoder(d), config, evaluation=evaluation)
    return path


def make_context(
    tmp_path: Path,
    *,
    checkpoint: Path | None = None,
    folders: list[Path] = (),
    data_dir: Path | None = None,
) -> AppContext:
    """An AppContext whose settings file (and data directory, by default) live under tmp_path."""
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    prefs = Preferences(
        checkpoint=str(checkpoint or ""),
        data_dir=str(data_dir or tmp_path / "data"),
        folders=[str(f) for f in folders],
    )
    save_preferences(settings, prefs)
    return AppContext.from_settings(settings)


def index_library(db_dir: Path, folder: Path, checkpoint_path: Path) -> Library:
    """Index folder into db_dir the way the app does, outside any thread."""
    library = Library(db_dir)
    run_steps(index_folders(library, [folder], Fingerprinter(load_checkpoint(checkpoint_path))))
    library.close()
    return library


def track_audio(path: Path, offset_s: float, seconds: float) -> np.ndarray:
    """seconds of a file's audio from offset_s, as the microphone would hear it at MIC_RATE."""
    audio = load_audio(path)  # 8 kHz
    start = int(offset_s * 8000)
    clip = audio[start : start + int(seconds * 8000)]
    return np.repeat(clip, MIC_RATE // 8000).astype(np.float32)  # a crude but exact upsampling


def fake_blocks(
    audio: np.ndarray,
    *,
    block_s: float = 0.1,
    pace: float = 0.02,
    fail_after_s: float | None = None,
) -> Iterator[tuple[np.ndarray, int]]:
    """Blocks as record_blocks yields them; raises like an unplugged device after fail_after_s."""
    block = int(MIC_RATE * block_s)
    for start in range(0, len(audio), block):
        if fail_after_s is not None and start >= fail_after_s * MIC_RATE:
            raise NoInputDeviceError(f"{FAKE_MIC.name!r} stopped delivering audio")
        time.sleep(pace)  # a real device paces the blocks; a little pacing keeps the GUI fed
        yield audio[start : start + block, None], MIC_RATE


def install_fake_mic(monkeypatch, audio: np.ndarray, **kwargs) -> None:
    """Make the listen worker hear `audio` from one fake device."""
    import nfp_desktop.workers as workers

    monkeypatch.setattr(workers, "input_devices", lambda: [FAKE_MIC])
    monkeypatch.setattr(workers, "record_blocks", lambda device: fake_blocks(audio, **kwargs))
