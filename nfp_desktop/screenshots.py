"""Screenshots of the main states for the docs: `python -m nfp_desktop.screenshots DIR`.

Runs on the display there is (the docs' shots: scripts/screenshots.sh, under Xvfb with openbox
and Qt's xcb plugin), else offscreen, in a throw-away data directory. The library is real
(Debian's Wesnoth music when installed, else generated tones) and indexed with the shipped default
checkpoint; the listening and matched states are shown by feeding the listen panel LiveStates,
as its worker would.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.api import InputDevice, LiveState, Match, NoInputDeviceError, Track, input_devices

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
N_TRACKS = 8
WINDOW_SIZE = (1000, 740)
EXAMPLE_DEVICES = [  # shown in the settings shot when this machine has no input device
    InputDevice(0, "Built-in Audio Analog Stereo", 2, 48000.0, True),
    InputDevice(1, "Monitor of Built-in Audio Analog Stereo", 2, 48000.0, False),
    InputDevice(2, "USB Microphone", 1, 44100.0, False),
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nfp_desktop.screenshots")
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    args = parser.parse_args(argv)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nfp-shots-") as tmp:
        for path in take_screenshots(Path(tmp), args.out):
            print(path)
    return 0


def take_screenshots(tmp: Path, out: Path) -> list[Path]:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from nfp_desktop.context import AppContext
    from nfp_desktop.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("storage/data_dir", str(tmp / "data"))
    window = MainWindow(AppContext.from_settings(settings))
    window.resize(*WINDOW_SIZE)
    window.show()
    shots = [_grab(app, window, out / "empty.png")]
    window.library_panel.add_folder(_music_folder(tmp))
    _wait(app, lambda: window.library_panel.progress_bar.value() >= 2)
    shots.append(_grab(app, window, out / "indexing.png"))
    _wait(app, lambda: not window.library_panel.busy)
    window.banner.clear()
    shots += _listen_shots(app, window, out)
    shots.append(_settings_shot(app, window, out / "settings.png"))
    window.close()
    return shots


def _listen_shots(app, window, out: Path) -> list[Path]:
    panel = window.listen_panel
    tracks = sorted(window.library_panel.tracks_model.rows(), key=lambda t: -t.duration_s)
    track, earlier = tracks[0], tracks[-1]
    panel.state = "starting"
    panel.set_listening_look(True)  # as when its worker runs
    panel.show_live(_device())
    for heard_s in np.arange(0.1, 1.6, 0.1):
        panel.show_live(LiveState("listening", None, -19.0, float(heard_s)))
    listening = _grab(app, window, out / "listening.png")
    panel.show_live(LiveState("matched", _match(earlier, 42.0), -18.0, 3.0))
    panel.show_live(LiveState("matched", _match(track, 151.3), -17.0, 3.5))
    matched = _grab(app, window, out / "matched.png")
    tray = _tray_shots(app, window, out)
    panel.show_live(LiveState("listening", None, -90.0, 9.0))  # the music stopped
    last_heard = _grab(app, window, out / "last_heard.png")
    window.tabs.setCurrentWidget(window.history_panel)
    history = _grab(app, window, out / "history.png")
    window.tabs.setCurrentWidget(window.library_panel)
    return [listening, matched, *tray, last_heard, history]


def _tray_shots(app, window, out: Path) -> list[Path]:
    """The screen with the new match's notification, and the tray icon's menu; only where the
    desktop has a tray (scripts/screenshots.sh starts one)."""
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QSystemTrayIcon

    if not QSystemTrayIcon.isSystemTrayAvailable():
        return []
    _wait(app, lambda: False, timeout_s=1.0)  # the notification has appeared
    screen = app.primaryScreen()
    notification = out / "notification.png"
    screen.grabWindow(0).save(str(notification))
    menu = window.tray.menu
    menu.popup(QPoint(screen.geometry().width() - 260, 30))
    shot = _grab(app, menu, out / "tray_menu.png")
    menu.close()
    return [notification, shot]


def _settings_shot(app, window, path: Path) -> Path:
    from nfp_desktop.settings_dialog import SettingsDialog

    def devices() -> list[InputDevice]:
        try:
            return input_devices() or EXAMPLE_DEVICES
        except NoInputDeviceError:
            return EXAMPLE_DEVICES

    dialog = SettingsDialog(window.app.prefs, list_devices=devices, parent=window)
    dialog.show()
    shot = _grab(app, dialog, path)
    dialog.close()
    return shot


def _music_folder(tmp: Path) -> Path:
    folder = tmp / "music"
    folder.mkdir()
    found = sorted(WESNOTH_MUSIC.glob("*.ogg"), key=lambda p: -p.stat().st_size)[:N_TRACKS]
    for path in found:
        (folder / path.name).symlink_to(path)
    return folder


def _device():
    from nfp_desktop.workers import DeviceOpened

    return DeviceOpened("Built-in Audio Analog Stereo", "")


def _match(track: Track, offset_s: float) -> Match:
    return Match(track, offset_s, 0.82, 0.93)


def _grab(app, widget, path: Path) -> Path:
    for _ in range(5):
        app.processEvents()
    widget.grab().save(str(path))
    return path


def _wait(app, done, timeout_s: float = 300.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
