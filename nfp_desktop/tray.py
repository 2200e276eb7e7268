"""The system tray icon: Listen/Stop and the last match in its menu, a notification for each new
match (a setting), and a place to keep listening after the window is closed (a setting)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMenu, QSystemTrayIcon, QWidget

from nfp_desktop.context import AppContext
from nfp_desktop.formatting import format_time
from nfp_desktop.history import HistoryEntry
from nfp_desktop.widgets import app_icon

NOTHING_YET = "Nothing heard yet"
NOTIFY_MS = 5000


class Tray(QObject):
    """Asks through signals, which the window answers: holding the window's methods would make
    a reference cycle, and a cycle collected on a worker thread deletes the window there."""

    listen_requested = Signal()
    show_requested = Signal()
    quit_requested = Signal()

    def __init__(self, app: AppContext, window: QWidget) -> None:
        super().__init__(window)
        self.app = app
        self.icon = QSystemTrayIcon(app_icon(), window)
        self.icon.setToolTip("nfp — identify music from your library")
        self.menu = QMenu(window)
        self.last_action = self.menu.addAction(NOTHING_YET)
        self.last_action.setEnabled(False)
        self.menu.addSeparator()
        self.listen_action = self.menu.addAction("Listen", self.listen_requested.emit)
        self.menu.addAction("Show window", self.show_requested.emit)
        self.menu.addAction("Quit", self.quit_requested.emit)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._on_activated)
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.icon.show()

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:  # a click: bring the window back
            self.show_requested.emit()

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:  # a click: bring the window back
            self.show_requested.emit()

    @property
    def available(self) -> bool:
        """Whether the desktop shows tray icons (a window can hide into it only then)."""
        return QSystemTrayIcon.isSystemTrayAvailable()

    def set_listening(self, listening: bool) -> None:
        self.listen_action.setText("Stop listening" if listening else "Listen")

    def show_match(self, entry: HistoryEntry) -> None:
        """A new match: the menu's first line, the tooltip and (a setting) a notification."""
        who = f"{entry.title} — {entry.artist}" if entry.artist else entry.title
        text = f"{who} (at {format_time(entry.offset_s)})"
        self.last_action.setText(f"Last: {text}")
        self.icon.setToolTip(f"nfp — last heard: {text}")
        if self.app.prefs.notify and self.icon.isVisible():
            self.icon.showMessage("nfp heard", text, app_icon(), NOTIFY_MS)
