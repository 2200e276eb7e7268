"""Nothing is clipped (geometry, not pixels): the main window in its busiest state (a banner, a
long title, skipped files) at 1000 × 700, at its minimum size and at 150 % scaling, and the
settings dialog with its re-index note (tests/support/layout_check.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nfp_desktop.preferences import Preferences
from nfp_desktop.settings_dialog import SettingsDialog
from tests.support.layout_check import busiest_window, check, clipped

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("size", ["1000x700", "min"])
def test_the_busiest_window_clips_nothing(qtbot, tmp_path, size: str):
    window = busiest_window(tmp_path)
    qtbot.addWidget(window)
    assert check(window, size) == []
    if size == "min":
        assert (window.width(), window.height()) == (760, 640)


def test_at_150_percent_scaling_nothing_is_clipped():
    env = {**os.environ, "QT_SCALE_FACTOR": "1.5", "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-m", "tests.support.layout_check", "1000x700", "min"],
                          cwd=Path(__file__).parents[1], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_settings_dialog_makes_room_for_its_reindex_note(qtbot):
    dialog = SettingsDialog(Preferences(), list_devices=lambda: [])  # the shipped d = 128 and 64
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.select_dimension(64)
    qtbot.wait(20)
    assert dialog.reindex_label.isVisible() and clipped(dialog) == []
