"""The app on Qt's real xcb plugin, end to end: `python -m tests.support.xcb_listen_check
WORKDIR` from the repository root, with DISPLAY on an X server and PULSE_SERVER on the virtual
microphone's server, which has a sink "speakers" (tests/test_desktop_xvfb.py sets all three up).
It indexes real music, chooses "Monitor of Speakers" in Settings by its description, plays a
track into that sink and waits for the window to show the title and a position within 1 s. Exit
status 0, or 1 and what it saw."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PySide6.QtWidgets import QApplication

from bench.virtual_mic import Player
from engine.core.audio import load_audio
from engine.model.checkpoint import default_checkpoint_path
from nfp_desktop.main_window import MainWindow
from nfp_desktop.settings_dialog import SettingsDialog
from tests.support.desktop_helpers import index_library, make_context

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
TRACKS = ["battle.ogg", "elvish-theme.ogg", "frantic.ogg"]
PLAYING, START_S, PLAY_S = "elvish-theme.ogg", 30.0, 40.0
MONITOR = "Monitor of Speakers"
HANG_GUARD_S = 60.0  # a guard against a hang, not a speed budget (bench/bench_live.py is that)


def main(work: Path) -> int:
    app = QApplication([sys.argv[0], "-platform", "xcb"])  # the helpers default to offscreen
    music = work / "music"
    music.mkdir()
    for name in TRACKS:
        (music / name).symlink_to(WESNOTH_MUSIC / name)
    index_library(work / "data" / "library", music, default_checkpoint_path())
    window = MainWindow(make_context(work, data_dir=work / "data"))
    window.show()
    dialog = SettingsDialog(window.app.prefs, parent=window)
    row = dialog.device_combo.findText(MONITOR)
    if row < 0:
        items = [dialog.device_combo.itemText(i) for i in range(dialog.device_combo.count())]
        print(f"Settings does not list {MONITOR!r}: {items}")
        return 1
    dialog.device_combo.setCurrentIndex(row)
    window.app.prefs = dialog.preferences()
    dialog.close()
    title = next(t.title for t in window.library_panel.tracks_model.rows()
                 if t.path.endswith(PLAYING))  # fmt: skip
    audio = load_audio(WESNOTH_MUSIC / PLAYING)
    player = Player(audio, START_S, PLAY_S, work, os.environ["PULSE_SERVER"], "speakers")
    panel = window.listen_panel
    try:
        player.wait_for_sound()
        panel.start_listening()
        started = time.monotonic()
        while time.monotonic() - started < HANG_GUARD_S:
            app.processEvents()
            seen = panel.title_label.text()
            if seen == title and abs(panel.position_s() - player.position_s()) <= 1.0:
                waited = time.monotonic() - started
                print(f"platform {app.platformName()}: {seen} at {panel.position_s():.1f} s "
                      f"(playing {player.position_s():.1f} s) after {waited:.1f} s")  # fmt: skip
                return 0
            time.sleep(0.02)
        print(f"after {HANG_GUARD_S:.0f} s the window shows {panel.title_label.text()!r} at "
              f"{panel.position_s():.1f} s, playing {player.position_s():.1f} s, "
              f"input {window.app.prefs.device!r}, banner {window.banner.text()!r}")  # fmt: skip
        return 1
    finally:
        player.stop()
        panel.shutdown()
        window.close()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
