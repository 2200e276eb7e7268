"""Whether anything in the main window is clipped (geometry, not pixels), in its busiest state:
a banner, a matched track with a long title, skipped files. Imported by
tests/test_desktop_layout.py, and run as a module there under QT_SCALE_FACTOR=1.5 (the scale
must be set before Qt starts): `python -m tests.support.layout_check WxH|min …`, from the
repository root, prints the problems."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QApplication,
    QComboBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QWidget,
)

MIN_LIST_HEIGHT = 80  # px: a table or list shorter than this shows no more than a row or two
CHECKED = (QLabel, QAbstractButton, QComboBox, QLineEdit, QProgressBar, QAbstractScrollArea)


def busiest_window(data_dir: Path):
    from engine.library.tracks import Track
    from engine.query.search import Match
    from engine.query.stream import LiveState
    from nfp_desktop.context import AppContext
    from nfp_desktop.main_window import MainWindow

    settings = QSettings(str(data_dir / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("storage/data_dir", str(data_dir))
    window = MainWindow(AppContext.from_settings(settings))
    window.show()
    window.banner.show_message(
        "error", "/home/user/Music/library: the library is damaged (a long cause) " * 3,
        action_text="Re-index now", action=lambda: None,
    )  # fmt: skip
    title = "The Dangerous Symphony of the Northern Wastes (Extended Edition)"
    track = Track(1, "/m/x.ogg", title, "Gianmarco Leone", "The Battle for Wesnoth", 327, 0, 9)
    window.listen_panel.show_live(LiveState("matched", Match(track, 151.0, 5.0, 0.93), -20.0, 4))
    window.library_panel._show_skipped([(f"/m/bad{i}.mp3", "a damaged MP3 file") for i in range(9)])
    return window


def clipped(root: QWidget) -> list[str]:
    """Visible controls smaller than they need to show their content whole."""
    problems = []
    for widget in root.findChildren(QWidget):
        fixed = widget.minimumHeight() == widget.maximumHeight()  # a deliberate size
        qt_own = widget.objectName().startswith("qt_") or type(widget).__name__ == "QHeaderView"
        if not isinstance(widget, CHECKED) or fixed or qt_own or not widget.isVisibleTo(root):
            continue
        need = widget.minimumSizeHint()
        if isinstance(widget, QLabel) and widget.wordWrap():
            need.setHeight(widget.heightForWidth(widget.width()))
        name = f"{type(widget).__name__} {getattr(widget, 'text', lambda: '')()[:30]!r}"
        if widget.width() < need.width() or widget.height() < need.height():
            problems.append(f"{name}: {widget.width()}×{widget.height()} < "
                            f"{need.width()}×{need.height()}")  # fmt: skip
        if isinstance(widget, QAbstractScrollArea) and widget.height() < MIN_LIST_HEIGHT:
            problems.append(f"{name}: only {widget.height()} px tall")
    return problems


def check(window, size: str) -> list[str]:
    """The problems with the window at `size` ("1000x700", or "min": its minimum size)."""
    if size == "min":
        window.resize(window.minimumSize())
    else:
        window.resize(*map(int, size.split("x")))
    for _ in range(5):
        QApplication.processEvents()
    return [f"{size}: {p}" for p in clipped(window)]


if __name__ == "__main__":
    app = QApplication([sys.argv[0]])
    with tempfile.TemporaryDirectory() as tmp:
        win = busiest_window(Path(tmp))
        found = [p for size in sys.argv[1:] for p in check(win, size)]
        win.close()
    print("\n".join(found) or "nothing clipped")
    sys.exit(1 if found else 0)
