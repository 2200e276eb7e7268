"""History and track-list tabs: tables over the thin models, with delete and export."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from nfp_desktop.context import AppContext
from nfp_desktop.formatting import format_time, plural
from nfp_desktop.history import HistoryEntry
from nfp_desktop.models import HistoryModel, TracklistModel, sortable_filter_proxy
from nfp_desktop.track_menu import attach_track_menu, track_ref
from nfp_desktop.widgets import make_table
from nfp_desktop.workers import FileResult


class HistoryPanel(QWidget):
    message = Signal(str, str)

    def __init__(self, app: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.app = app
        self.model = HistoryModel(self)
        self.proxy = sortable_filter_proxy(self.model, self)
        self.table = make_table(self.proxy, widths=(150, 220, 170, 70, 95))
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)  # the newest first
        self.table.setAccessibleName("Identified tracks, newest first")
        attach_track_menu(self.table, self.model, track_ref)
        self.delete_button = QPushButton("Delete selected")
        self.delete_button.setShortcut("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.clicked.connect(lambda: self._export("csv"))
        self.json_button = QPushButton("Export JSON…")
        self.json_button.clicked.connect(lambda: self._export("json"))
        buttons = QHBoxLayout()
        buttons.addWidget(self.delete_button)
        buttons.addStretch(1)
        buttons.addWidget(self.csv_button)
        buttons.addWidget(self.json_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.reload()

    def reload(self) -> None:
        self.model.set_rows(self.app.history.entries)

    def add(self, entry: HistoryEntry) -> None:
        self.app.history.add(entry)
        self.reload()

    def delete_rows(self, rows: list[int]) -> None:
        """Delete entries by their row in the history (source model order)."""
        self.app.history.remove(rows)
        self.reload()

    def delete_selected(self) -> None:
        selected = self.table.selectionModel().selectedRows()
        self.delete_rows([self.proxy.mapToSource(i).row() for i in selected])

    def _export(self, kind: str) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export history", f"nfp-history.{kind}", f"{kind.upper()} (*.{kind})"
        )
        if path:
            self.export(Path(path), kind)

    def export(self, path: Path, kind: str) -> None:
        try:
            (self.app.history.export_csv if kind == "csv" else self.app.history.export_json)(path)
        except OSError as e:
            self.message.emit("error", f"{path}: cannot write the export ({e.strerror or e})")
            return
        self.message.emit("info", f"History exported to {path}.")


class TracklistPanel(QWidget):
    """The track list of the last long file identified."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = TracklistModel(self)
        self.title = QLabel("Identify a long recording (a mix, a radio show) to list its tracks.")
        self.title.setWordWrap(True)
        self.table = make_table(self.model, widths=(150, 240, 180, 70))
        self.table.setAccessibleName("Tracks in the recording, in order")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addWidget(self.title)
        layout.addWidget(self.table, 1)

    def show_result(self, result: FileResult) -> None:
        entries = result.tracklist or []
        self.model.set_rows(entries)
        found = f"{plural(len(entries), 'track')} found" if entries else "no library track found"
        self.title.setText(f"{result.path.name} ({format_time(result.duration_s)}): {found}")
