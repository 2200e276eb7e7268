"""Small widgets: the message banner, the input level meter, the confidence bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QAbstractItemModel, QSize, Qt, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableView,
    QWidget,
)

BANNER_COLOURS = {  # kind → (background, border)
    "error": ("#fdecea", "#e0a39c"),
    "notice": ("#fff7e0", "#e6cf8b"),
    "info": ("#e8f1fb", "#a9c4e6"),
}
METER_FLOOR_DB = -60.0  # silence at the left edge of the level meter
INFO_SHOWN_MS = 10_000  # an info banner (a report of what was done) leaves by itself after this


class MessageBanner(QFrame):
    """A message inside the window (errors never open a modal box or go to a console)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind = ""
        self._label = QLabel()
        self._label.setWordWrap(True)
        self._label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton()
        self.action_button.setAccessibleName("Banner action")
        self._close = QPushButton("Dismiss")
        self._close.setObjectName("dismiss")
        self._close.setFlat(True)
        self._close.setAccessibleName("Dismiss the message")
        self.setAccessibleName("Message")
        self._close.clicked.connect(self.clear)
        self._action: Callable[[], None] | None = None
        self.action_button.clicked.connect(self._run_action)
        self.stale_timer = QTimer(self)
        self.stale_timer.setSingleShot(True)
        self.stale_timer.timeout.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(14, 10, 10, 10)
        layout.addWidget(self._label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self._close)
        self.hide()

    def show_message(
        self,
        kind: str,
        text: str,
        *,
        action_text: str = "",
        action: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        background, border = BANNER_COLOURS[kind]
        self.setStyleSheet(
            f"MessageBanner {{ background: {background}; border: 1px solid {border};"
            " border-radius: 6px; } QLabel { color: #222; }"
            # The banner is light in every palette, so its buttons' text must be dark in all.
            " QPushButton#dismiss { color: #1a4f9c; border: none; text-decoration: underline; }"
            " QPushButton#dismiss:focus { outline: 2px solid #1a4f9c; }"
        )
        self.setAccessibleDescription(f"{kind}: {text}")
        self.action_button.setAccessibleName(action_text or "Banner action")
        self._label.setText(text)
        self._action = action
        self.action_button.setText(action_text)
        self.action_button.setVisible(bool(action_text and action))
        self.show()
        # Reports go stale and leave; errors and notices wait for the user or for a fix.
        if kind == "info" and not action:
            self.stale_timer.start(INFO_SHOWN_MS)
        else:
            self.stale_timer.stop()

    def text(self) -> str:
        return self._label.text() if self.kind else ""

    def clear(self) -> None:
        self.kind = ""
        self._label.clear()
        self._action = None
        self.hide()

    def _run_action(self) -> None:
        action = self._action
        self.clear()
        if action is not None:
            action()


class LevelMeter(QProgressBar):
    """Input level in dBFS, from METER_FLOOR_DB (empty) to 0 dB (full)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(0, 1000)
        self.setTextVisible(False)
        self.setFixedHeight(8)
        self.setToolTip("Input level")
        self.setAccessibleName("Input level")
        self.level_db = METER_FLOOR_DB

    def set_level_db(self, level_db: float) -> None:
        self.level_db = max(METER_FLOOR_DB, min(0.0, level_db))
        self.setValue(round(1000 * (1 - self.level_db / METER_FLOOR_DB)))
        self.setAccessibleDescription(f"{self.level_db:.0f} dB")


class ConfidenceBar(QProgressBar):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(0, 100)
        self.setFixedHeight(18)
        self.setFormat("Confidence %p%")
        self.setToolTip("How sure the match is (50 % is the threshold for reporting one)")
        self.setAccessibleName("Match confidence")

    def set_confidence(self, confidence: float | None) -> None:
        self.setVisible(confidence is not None)
        self.setValue(round(100 * (confidence or 0.0)))


def make_table(model: QAbstractItemModel, widths: Sequence[int] = ()) -> QTableView:
    """A read-only table of whole rows; columns get these widths, the last one stretches."""
    table = QTableView()
    table.setModel(model)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setAlternatingRowColors(True)
    table.verticalHeader().hide()
    table.horizontalHeader().setStretchLastSection(True)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    table.setWordWrap(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setTabKeyNavigation(False)  # Tab moves on to the next control, arrows move in rows
    for column, width in enumerate(widths):
        table.setColumnWidth(column, width)
    return table


def app_icon() -> QIcon:
    """The app's icon at every size it ships (nfp_desktop/icons, made by scripts/make_icons.py)."""
    icon = QIcon()
    for png in sorted((Path(__file__).parent / "icons").glob("nfp-*.png")):
        icon.addFile(str(png))
    return icon


class ElidedLabel(QLabel):
    """One line that ends in "…" where it does not fit, instead of wrapping into lines the
    layout has no room for; the whole text is its tooltip and its accessible name."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setText(text)

    def setText(self, text: str) -> None:
        self._full = text
        self.setToolTip(text)
        self.setAccessibleName(text)
        self._elide()

    def text(self) -> str:
        return self._full

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def minimumSizeHint(self) -> QSize:
        """As narrow as a few letters: the rest is elided, never clipped."""
        return QSize(
            self.fontMetrics().horizontalAdvance("Mm…"), super().minimumSizeHint().height()
        )

    def _elide(self) -> None:
        metrics = self.fontMetrics()
        super().setText(metrics.elidedText(self._full, Qt.TextElideMode.ElideRight, self.width()))
