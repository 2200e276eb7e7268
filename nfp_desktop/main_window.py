"""The main window: message banner, listen panel on top, Library / History / Track list tabs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QColor,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
    QPalette,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.api import (
    AUDIO_EXTENSIONS,
    EmptyLibraryError,
    IndexCorruptError,
    IndexMismatchError,
    NfpError,
    built_by,
)
from nfp_desktop.context import AppContext
from nfp_desktop.history import HistoryStore
from nfp_desktop.history_panel import HistoryPanel, TracklistPanel
from nfp_desktop.library_panel import LibraryPanel
from nfp_desktop.listen_panel import ListenPanel
from nfp_desktop.preferences import Preferences
from nfp_desktop.session import LibrarySession
from nfp_desktop.settings_dialog import SettingsDialog
from nfp_desktop.tray import Tray
from nfp_desktop.widgets import MessageBanner
from nfp_desktop.workers import describe_error

STYLE = """
QWidget#central { background: palette(window); }
QFrame#matchCard { background: palette(base); border: 1px solid palette(mid); border-radius: 10px; }
QPushButton#listenButton { font-size: 20pt; font-weight: 600; border-radius: 10px;
    background: #2f6fde; color: white; padding: 8px 24px; }
QPushButton#listenButton:hover { background: #2a63c7; }
QPushButton#listenButton:focus { border: 3px solid palette(highlight); }
QPushButton#listenButton:disabled { background: #9db6e3; }
QPushButton#listenButton[listening="true"] { background: #c8412f; }
QPushButton#listenButton[listening="true"]:hover { background: #b23a2a; }
QStatusBar QLabel { padding: 2px 10px; color: DIM; }
QLabel#status { color: DIM; }
QLabel#dim { color: DIM; }
QLabel#note { color: NOTE; }
QLabel#strong { font-weight: 600; }
QFrame#progressFrame { border: 1px solid palette(mid); border-radius: 6px; }
"""
# Messages from the engine that an index rebuild fixes: the banner offers it as an action.
REBUILD_FIXES = (IndexMismatchError, IndexCorruptError)
# Below this the listen card wraps its title and the track table shows no rows: tests/
# test_desktop_layout.py checks that nothing is clipped here, at 1000 × 700 and at 150 %.
MIN_SIZE = (760, 640)


def styled(palette: QPalette) -> str:
    """STYLE for this palette: secondary text halfway-ish between the text and the background
    (palette(dark), as before, is near black in a dark palette), notes amber on either."""
    text = palette.color(QPalette.ColorRole.WindowText)
    back = palette.color(QPalette.ColorRole.Window)
    dim = QColor(
        round(0.6 * text.red() + 0.4 * back.red()),
        round(0.6 * text.green() + 0.4 * back.green()),
        round(0.6 * text.blue() + 0.4 * back.blue()),
    )
    note = "#e0b050" if back.lightness() < 128 else "#8a5a00"
    return STYLE.replace("DIM", dim.name()).replace("NOTE", note)


class MainWindow(QMainWindow):
    def __init__(self, app: AppContext) -> None:
        super().__init__()
        self.app = app
        self.setWindowTitle("nfp — identify music from your library")
        self.setAcceptDrops(True)
        self.resize(980, 720)
        self.setMinimumSize(MIN_SIZE[0], MIN_SIZE[1])
        self.banner = MessageBanner()
        self.listen_panel = ListenPanel(app)
        self.library_panel = LibraryPanel(app)
        self.history_panel = HistoryPanel(app)
        self.tracklist_panel = TracklistPanel()
        self._build()
        self._connect()
        self._build_actions()
        self.tray = Tray(app, self)
        self.tray.listen_requested.connect(self.listen_panel.toggle_listening)
        self.tray.show_requested.connect(self.show_window)
        self.tray.quit_requested.connect(self.quit)
        self.listen_panel.identified.connect(self.tray.show_match)
        self.listen_panel.listening_changed.connect(self.tray.set_listening)
        self._quitting = False
        self.library_panel.reload()  # after _connect: a damaged library must reach the banner
        self.update_status()
        self.restoreGeometry(app.settings.value("window/geometry", b""))

    def _build(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.addTab(self.library_panel, "Library")
        self.tabs.addTab(self.history_panel, "History")
        self.tabs.addTab(self.tracklist_panel, "Track list")
        self.listen_panel.setAccessibleName("Listen")
        for index in range(self.tabs.count()):
            self.tabs.widget(index).setAccessibleName(self.tabs.tabText(index))
        central = QWidget()
        central.setObjectName("central")
        layout = QVBoxLayout(central)
        layout.setContentsMargins(16, 14, 16, 8)
        layout.setSpacing(12)
        layout.addWidget(self.banner)
        layout.addWidget(self.listen_panel)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.setStyleSheet(styled(self.palette()))
        self.status_label = QLabel()
        self.statusBar().addPermanentWidget(self.status_label, 1)

    def _connect(self) -> None:
        for panel in (self.listen_panel, self.library_panel, self.history_panel):
            panel.message.connect(self.show_message)
        self.listen_panel.error.connect(self.show_error)
        self.library_panel.error.connect(self.show_error)
        self.listen_panel.identified.connect(self.history_panel.add)
        self.listen_panel.tracklist_ready.connect(self._show_tracklist)
        self.listen_panel.identify_button.clicked.connect(self.open_file)
        self.library_panel.busy_changed.connect(self._on_indexing)
        self.library_panel.library_changed.connect(self.update_status)
        self.library_panel.progress_text.connect(self.status_label.setText)

    def _build_actions(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = _action(self, "&Identify a file…", "Ctrl+O", self.open_file, file_menu)
        _action(
            self, "&Add music folder…", "Ctrl+Shift+O", self.library_panel.choose_folder, file_menu
        )
        _action(self, "&Update library", "F5", self.library_panel.update_library, file_menu)
        file_menu.addSeparator()
        self.quit_action = _action(self, "&Quit", "Ctrl+Q", self.quit, file_menu)
        listen_menu = self.menuBar().addMenu("&Listen")
        self.listen_action = _action(
            self, "&Listen / Stop", "Ctrl+L", self.listen_panel.toggle_listening, listen_menu
        )
        tools = self.menuBar().addMenu("&Tools")
        self.settings_action = _action(self, "&Settings…", "Ctrl+,", self.open_settings, tools)

    # ---- messages and status ------------------------------------------------------------------
    def show_message(self, kind: str, text: str) -> None:
        self.banner.show_message(kind, text)

    def show_error(self, error: Exception) -> None:
        """An engine error in the banner; one that a rebuild fixes comes with that offer."""
        if isinstance(error, EmptyLibraryError):  # e.g. Listen before any folder was added
            self.banner.show_message(
                "notice",
                describe_error(error),
                action_text="Add music folder…",
                action=self.library_panel.choose_folder,
            )
        elif isinstance(error, REBUILD_FIXES):
            self.banner.show_message(
                "error",
                describe_error(error),
                action_text="Re-index now",
                action=self.library_panel.rebuild,
            )
        else:
            self.banner.show_message("error", describe_error(error))

    def update_status(self) -> None:
        try:
            info = self.app.session.info()
        except (IndexCorruptError, OSError) as e:
            self.status_label.setText(str(e))
            return
        self.listen_panel.set_library_empty(not info or not info["tracks"])
        if not info or not info["tracks"]:
            self.status_label.setText("Library is empty — add a music folder to get started.")
            return
        self.status_label.setText(
            f"{info['tracks']} tracks, {info['hours']:.1f} h · "
            f"checkpoint {info['checkpoint']} (d = {info['d']}) · {info['db']}"
        )

    def _on_indexing(self, busy: bool, writes_current_library: bool) -> None:
        # Searching a library while it is written would read half-written rows: wait for it.
        blocked = busy and writes_current_library
        self.listen_panel.set_listen_enabled(
            not blocked, "Listening and identifying are available when indexing has finished."
        )
        self.open_action.setEnabled(not blocked)
        if busy:
            self.status_label.setText(
                "Indexing… (the window stays usable; Cancel keeps what is done)"
            )
        else:
            self.update_status()

    def _show_tracklist(self, result) -> None:
        self.tracklist_panel.show_result(result)
        self.tabs.setCurrentWidget(self.tracklist_panel)

    # ---- files --------------------------------------------------------------------------------
    def open_file(self) -> None:
        extensions = " ".join(f"*{e}" for e in sorted(AUDIO_EXTENSIONS))
        path, _ = QFileDialog.getOpenFileName(
            self, "Identify a file", "", f"Audio ({extensions});;All files (*)"
        )
        if path:
            self.listen_panel.identify_file(Path(path))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _dropped_paths(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        self.handle_drop(_dropped_paths(event))
        event.acceptProposedAction()

    def handle_drop(self, paths: list[Path]) -> None:
        """A dropped folder joins the library; a dropped audio file is identified."""
        for path in paths:
            if path.is_dir():
                self.library_panel.add_folder(path)
                return
        if paths:
            self.listen_panel.identify_file(paths[0])

    # ---- settings -----------------------------------------------------------------------------
    def open_settings(self) -> None:
        dialog = SettingsDialog(self.app.prefs, parent=self)
        if dialog.exec() == SettingsDialog.DialogCode.Accepted:
            self.apply_preferences(dialog.preferences())

    def apply_preferences(self, new: Preferences) -> None:
        """Save new preferences; offer a re-index when the library needs another checkpoint."""
        old = self.app.prefs
        busy = self.listen_panel.busy or self.library_panel.busy
        if new.data_dir != old.data_dir and busy:
            new = dataclasses.replace(new, data_dir=old.data_dir)
            self.show_message(
                "notice", "Stop listening and indexing first, then change the data directory."
            )
        self.app.prefs = new
        self.app.save()
        if new.precision != old.precision:
            self.app.session.use_precision(new.precision)
        if new.data_dir != old.data_dir:
            self._open_data_dir()
        elif new.checkpoint != old.checkpoint and self._library_needs(new):
            self.banner.show_message(
                "notice",
                "The new checkpoint needs the library to be re-indexed. Until that is done, "
                "the current index (and its checkpoint) stays in use.",
                action_text="Re-index now",
                action=self.library_panel.rebuild,
            )

    def _library_needs(self, prefs: Preferences) -> bool:
        """Whether the library was built by another checkpoint than the one prefs name."""
        session = self.app.session
        try:
            info = session.info()
            if not (info and info["tracks"]):
                return False
            ours = built_by(session.library(), session.checkpoint(prefs.checkpoint_path()))
        except (NfpError, OSError):
            return True  # cannot tell: the re-index offer is the safe side
        return ours is False

    def _open_data_dir(self) -> None:
        self.app.session.close()
        self.app.session = LibrarySession(self.app.prefs.db_dir, self.app.prefs.precision)
        self.app.history = HistoryStore(Path(self.app.prefs.data_dir))
        self.history_panel.reload()
        self.library_panel.reload()
        self.update_status()

    def show_window(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def quit(self) -> None:
        """Quit for real: also from the tray, where closing the window only hides it."""
        self._quitting = True
        self.close()

    def keeps_listening_in_tray(self) -> bool:
        prefs = self.app.prefs
        return (prefs.close_to_tray and self.listen_panel.busy and self.tray.available
                and not self._quitting)  # fmt: skip

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.keeps_listening_in_tray():
            self.hide()
            event.ignore()
            return
        self.app.settings.setValue("window/geometry", self.saveGeometry())
        self.listen_panel.shutdown()
        self.library_panel.shutdown()
        self.app.session.close()
        event.accept()


def _action(window: QMainWindow, text: str, shortcut, slot, menu) -> QAction:
    action = QAction(text, window)
    action.setShortcut(QKeySequence(shortcut))
    action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
    action.triggered.connect(slot)
    menu.addAction(action)
    return action


def _dropped_paths(event: QDragEnterEvent | QDropEvent) -> list[Path]:
    mime = event.mimeData()
    if not mime.hasUrls():
        return []
    paths = [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
    return [p for p in paths if p.is_dir() or p.suffix.lower() in AUDIO_EXTENSIONS]
