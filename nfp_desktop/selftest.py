"""`nfp-desktop --self-test`: start headless, load the default checkpoint, open the window, exit.

For a packaged (frozen) app: proves that Qt, torch, faiss, PyAV and the shipped checkpoint are
all inside the bundle and work, without a display or a microphone.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.audio import SAMPLE_RATE
from engine.errors import NfpError, NoInputDeviceError

TEST_AUDIO_S = 3.0


def run_self_test() -> int:
    """0 when everything works; otherwise 1 and the reason on stderr."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    started = time.perf_counter()
    try:
        facts = [_check_engine(), _check_window(), _check_devices()]
    except NfpError as e:
        print(f"nfp-desktop self-test: FAILED: {e}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    print(f"nfp-desktop self-test: ok ({'; '.join(facts)}; {elapsed:.1f} s)")
    return 0


def _check_engine() -> str:
    from engine.checkpoint import default_checkpoint_path, load_checkpoint
    from engine.fingerprint import Fingerprinter

    checkpoint = load_checkpoint(default_checkpoint_path())
    t = np.arange(int(TEST_AUDIO_S * SAMPLE_RATE)) / SAMPLE_RATE
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 0.5 * t)).astype(np.float32)
    fp = Fingerprinter(checkpoint).audio(audio)
    if not np.allclose(np.linalg.norm(fp, axis=1), 1.0, atol=1e-3):
        raise NfpError(f"{checkpoint.path}: fingerprints are not unit vectors")
    return f"{checkpoint.path.name}: {len(fp)} fingerprints of d = {checkpoint.d}"


def _check_window() -> str:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from nfp_desktop.context import AppContext
    from nfp_desktop.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    with tempfile.TemporaryDirectory(prefix="nfp-self-test-") as tmp:
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        settings.setValue("storage/data_dir", tmp)
        window = MainWindow(AppContext.from_settings(settings))
        window.show()
        app.processEvents()
        window.close()
    return f"window opened on Qt platform {app.platformName()}"


def _check_devices() -> str:
    from engine.mic import input_devices

    try:
        return f"{len(input_devices())} input device(s)"
    except NoInputDeviceError as e:  # a machine without a microphone still passes
        return str(e)
