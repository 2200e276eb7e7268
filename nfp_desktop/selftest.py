"""`nfp-desktop --self-test`: check the engine, open the window, exit.

Where a display is present the window opens on the real platform plugin (xcb or wayland), so the
self-test fails where the app could not open a window; headless, it uses Qt's offscreen one.

For a packaged (frozen) app: proves that Qt, ONNX Runtime, faiss, PyAV and the shipped checkpoint
are all inside the bundle and work, without a display, a library or a microphone.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from engine.api import NfpError
from engine.api import run_self_test as engine_self_test


def run_self_test() -> int:
    """0 when everything works; otherwise 1 and the reason on stderr."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # headless: nothing else can start
    started = time.perf_counter()
    try:
        facts = [_check_engine(), _check_window()]
    except NfpError as e:
        print(f"nfp-desktop self-test: FAILED: {e}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    print(f"nfp-desktop self-test: ok ({'; '.join(facts)}; {elapsed:.1f} s)")
    return 0


def _check_engine() -> str:
    report = engine_self_test()
    return (
        f"{report['checkpoint']} (d = {report['d']}) found a planted excerpt at "
        f"{report['match_offset_s']:.2f} s; encoder runs on {report['backend']}, "
        f"{report['precision']}, "
        f"reference cosine {report['reference_cosine']}; input devices: {report['input_devices']}"
    )


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
        # QSettings writes what the window saved when it is destroyed, which would make the
        # folder again after it is removed: write it now, while the folder is there.
        settings.sync()
    return f"window opened on Qt platform {app.platformName()}"
