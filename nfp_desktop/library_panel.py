"""The library panel: music folders, indexing (progress, ETA, Cancel), tracks, skipped files."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.api import IndexProgress, IndexSummary, NfpError, Track, remove_folder
from nfp_desktop.context import AppContext
from nfp_desktop.formatting import estimate_eta_s, format_eta, plural
from nfp_desktop.models import SkippedModel, TrackTableModel, sortable_filter_proxy
from nfp_desktop.track_menu import attach_track_menu, track_ref
from nfp_desktop.widgets import make_table
from nfp_desktop.workers import GeneratorWorker, IndexOutcome, index_job

TABLE_REFRESH_S = 0.5  # the track table takes in newly indexed tracks at most this often


class LibraryPanel(QWidget):
    message = Signal(str, str)  # kind ("notice" | "info" | "error"), text
    error = Signal(object)  # an exception from the engine, shown in the window
    busy_changed = Signal(bool, bool)  # busy, whether the library in use is being written
    library_changed = Signal()
    progress_text = Signal(str)  # a line for the status bar: indexing is seen from any tab

    def __init__(self, app: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.app = app
        self.tracks_model = TrackTableModel(self)
        self.tracks_proxy = sortable_filter_proxy(self.tracks_model, self)
        self.skipped_model = SkippedModel(self)
        self._worker: GeneratorWorker | None = None
        self._live_rows: dict[str, Track] | None = None  # the table's rows during an update
        self._shown_s = 0.0  # when the table last took in new tracks
        self._started_s = 0.0
        self._build()

    # ---- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(10)
        layout.addLayout(self._build_folder_row())
        layout.addWidget(self._build_progress())
        layout.addLayout(self._build_filter_row())
        self.table = make_table(self.tracks_proxy, widths=(230, 170, 210, 75))
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(TrackTableModel.TITLE, Qt.SortOrder.AscendingOrder)
        self.table.setAccessibleName("Tracks in the library")
        attach_track_menu(self.table, self.tracks_model, track_ref)
        layout.addWidget(self.table, 1)
        # Skipped files fold into one line by default: open, they would take the track table's room.
        self.skipped_box = QFrame()
        skipped_layout = QVBoxLayout(self.skipped_box)
        skipped_layout.setContentsMargins(0, 0, 0, 0)
        self.skipped_toggle = QToolButton()
        self.skipped_toggle.setCheckable(True)
        self.skipped_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.skipped_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.skipped_toggle.setAutoRaise(True)
        self.skipped_toggle.toggled.connect(self._fold_skipped)
        self.skipped_table = make_table(self.skipped_model, widths=(220, 420))
        self.skipped_table.setAccessibleName("Skipped files and why")
        self.skipped_table.setMaximumHeight(130)
        self.skipped_table.hide()
        skipped_layout.addWidget(self.skipped_toggle)
        skipped_layout.addWidget(self.skipped_table)
        self.skipped_box.hide()
        layout.addWidget(self.skipped_box)

    def _build_folder_row(self) -> QHBoxLayout:
        self.folders_label = QLabel()
        self.folders_label.setWordWrap(True)
        self.add_button = QPushButton("Add music folder…")
        self.add_button.clicked.connect(self.choose_folder)
        self.remove_button = QPushButton("Remove folder…")
        self.remove_button.setToolTip("Take a music folder and its tracks out of the library")
        self.remove_button.clicked.connect(self.choose_folder_to_remove)
        self.update_button = QPushButton("Update library")
        self.update_button.setToolTip("Index new and changed files, drop removed ones (F5)")
        self.update_button.clicked.connect(self.update_library)
        row = QHBoxLayout()
        row.addWidget(self.folders_label, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        row.addWidget(self.update_button)
        return row

    def _build_progress(self) -> QFrame:
        self.progress_frame = QFrame()
        self.progress_frame.setObjectName("progressFrame")
        self.progress_title = QLabel("Indexing…")
        self.progress_title.setObjectName("strong")
        self.progress_bar = QProgressBar()
        self.progress_bar.setAccessibleName("Indexing progress")
        self.progress_bar.setFormat("%v / %m files")
        self.current_file_label = QLabel()
        self.current_file_label.setObjectName("dim")
        self.eta_label = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        top = QHBoxLayout()
        top.addWidget(self.progress_title)
        top.addStretch(1)
        top.addWidget(self.eta_label)
        top.addWidget(self.cancel_button)
        box = QVBoxLayout(self.progress_frame)
        box.setContentsMargins(12, 10, 12, 10)
        box.addLayout(top)
        box.addWidget(self.progress_bar)
        box.addWidget(self.current_file_label)
        self.progress_frame.hide()
        return self.progress_frame

    def _build_filter_row(self) -> QHBoxLayout:
        self.filter_edit = QLineEdit()
        self.filter_edit.setAccessibleName("Filter the tracks")
        self.filter_edit.setPlaceholderText("Filter by title, artist, album or path…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.tracks_proxy.setFilterFixedString)
        self.count_label = QLabel()
        self.count_label.setObjectName("dim")
        row = QHBoxLayout()
        row.addWidget(self.filter_edit, 1)
        row.addWidget(self.count_label)
        return row

    # ---- state --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._worker is not None

    def reload(self) -> None:
        """Show the library's tracks; a damaged library is reported with an offer to rebuild."""
        self._show_folders()
        try:
            tracks = self.app.session.tracks()
        except NfpError as e:
            tracks = []
            self.error.emit(e)
        self._show_tracks(tracks)
        self._show_skipped(self._kept_skips([]))

    def _kept_skips(self, fallback: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The skips the library keeps (they survive a restart; an update stores its own before
        it ends); `fallback` where the library cannot say (a damaged one is reported elsewhere)."""
        try:
            return self.app.session.skipped()
        except NfpError:
            return fallback

    def _show_skipped(self, skipped: list[tuple[str, str]]) -> None:
        self.skipped_model.set_rows(skipped)
        self.skipped_toggle.setText(f"{plural(len(skipped), 'file')} skipped — show why")
        self.skipped_box.setVisible(bool(skipped))

    def _fold_skipped(self, open_: bool) -> None:
        self.skipped_table.setVisible(open_)
        self.skipped_toggle.setArrowType(
            Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow
        )

    def _show_folders(self) -> None:
        folders = self.app.prefs.folders
        self.folders_label.setText(
            "Music folders: " + ", ".join(_folder_label(f) for f in folders)
            if folders
            else "No music folder yet — add one to build your library."
        )
        self.update_button.setEnabled(bool(folders) and not self.busy)
        self.remove_button.setEnabled(bool(folders) and not self.busy)

    def _show_tracks(self, tracks: list[Track]) -> None:
        self.tracks_model.set_rows(tracks)
        hours = sum(t.duration_s for t in tracks) / 3600
        self.count_label.setText(f"{len(tracks)} tracks · {hours:.1f} h")

    # ---- actions ------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a music folder")
        if folder:
            self.add_folder(Path(folder))

    def add_folder(self, folder: Path) -> None:
        folder_text = str(Path(folder).expanduser().resolve())
        if folder_text not in self.app.prefs.folders:
            self.app.prefs.folders.append(folder_text)
            self.app.save()
            self._show_folders()
        self._start([folder_text])

    def choose_folder_to_remove(self) -> None:
        folders = self.app.prefs.folders
        labels = [_folder_label(f) for f in folders]
        title, prompt = "Remove a music folder", "Its tracks leave the library:"
        label, ok = QInputDialog.getItem(self, title, prompt, labels, 0, False)
        if ok and label in labels:
            self.remove_folder(folders[labels.index(label)])

    def remove_folder(self, folder: str) -> None:
        """Take the folder out of the settings and its tracks out of the library (a missing
        folder's tracks are kept until this is done)."""
        if self.busy or folder not in self.app.prefs.folders:
            return
        self.app.prefs.folders.remove(folder)
        self.app.save()
        removed = 0
        if self.app.session.exists():
            try:
                removed = remove_folder(self.app.session.library(), folder)
            except NfpError as e:
                self.error.emit(e)
            self.app.session.index_changed()
        self.reload()
        self.message.emit("info", f"Removed {folder}: {plural(removed, 'track')} left the library.")

    def update_library(self) -> None:
        if self.app.prefs.folders:
            self._start(list(self.app.prefs.folders))

    def rebuild(self) -> None:
        """Index everything again into a new directory; the old index serves until it is done."""
        if self.busy:
            self.message.emit("notice", "Wait for the current indexing to finish, then re-index.")
            return
        if not self.app.prefs.folders:
            self.message.emit("notice", "Add a music folder to build the library.")
            return
        self._start(list(self.app.prefs.folders), rebuild=True)

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self.cancel_button.setEnabled(False)
            self.progress_title.setText("Cancelling after the current file…")

    def _start(self, folders: list[str], *, rebuild: bool = False) -> None:
        if self.busy:
            self.message.emit("notice", "Indexing is already running.")
            return
        try:
            checkpoint_path = self.app.prefs.checkpoint_path()
        except NfpError as e:
            self.error.emit(e)
            return
        job = index_job(self.app.session, checkpoint_path, folders, rebuild=rebuild)
        self._worker = GeneratorWorker(job, self)
        self._worker.progressed.connect(self._on_progress)
        self._worker.succeeded.connect(self._on_done)
        self._worker.failed.connect(self.error)
        self._worker.finished.connect(self._on_finished)
        self._started_s = time.monotonic()
        # A rebuild's tracks replace the old ones only once it is complete; an update's join
        # the table as they are stored.
        self._live_rows = None if rebuild else {t.path: t for t in self.tracks_model.rows()}
        self._shown_s = 0.0
        self._show_progress_start(rebuild)
        self.busy_changed.emit(True, not rebuild)
        self._worker.start()

    def _show_progress_start(self, rebuild: bool) -> None:
        self.progress_title.setText(
            "Re-indexing (the current index stays in use)…" if rebuild else "Indexing…"
        )
        self.progress_bar.setRange(0, 0)  # busy until the first file is done
        self.current_file_label.setText("Scanning folders…")
        self.eta_label.setText("")
        self.cancel_button.setEnabled(True)
        self.add_button.setEnabled(False)
        self.update_button.setEnabled(False)
        self.progress_frame.show()

    def _on_progress(self, p: IndexProgress) -> None:
        self.progress_bar.setRange(0, max(p.total, 1))
        self.progress_bar.setValue(p.done)
        folder = f" (folder {p.folder_no} of {p.n_folders})" if p.n_folders > 1 else ""
        verb = {"indexed": "Indexed", "moved": "Moved", "skipped": "Skipped"}[p.outcome]
        self.current_file_label.setText(f"{verb} {Path(p.path).name}{folder}")
        elapsed_s = time.monotonic() - self._started_s
        self.eta_label.setText(format_eta(estimate_eta_s(elapsed_s, p.done, p.total)))
        self.progress_text.emit(f"Indexing: {p.done} of {plural(p.total, 'file')}{folder}, "
                                f"{self.eta_label.text()} (Library tab: Cancel)")  # fmt: skip
        if p.track is not None and self._live_rows is not None:
            self._live_rows[p.track.path] = p.track
            if time.monotonic() - self._shown_s >= TABLE_REFRESH_S or p.done == p.total:
                self._shown_s = time.monotonic()
                self._show_tracks(list(self._live_rows.values()))

    def _on_done(self, outcome: IndexOutcome) -> None:
        summary = outcome.summary
        if not outcome.rebuilt or self._finish_rebuild(outcome):
            self._show_tracks(outcome.tracks)
        self.app.session.index_changed()
        self._show_skipped(self._kept_skips(summary.skipped))
        self.message.emit(*_summary_message(summary, rebuilt=outcome.rebuilt))
        self.library_changed.emit()

    def _finish_rebuild(self, outcome: IndexOutcome) -> bool:
        """Whether the rebuild replaced the library (the engine keeps the old one when the
        rebuild was cancelled or found nothing); if so, the session opens the new one."""
        if not outcome.summary.replaced:
            return False
        self.app.session.close()  # the open library still reads the replaced files
        return True

    def _on_finished(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.deleteLater()
        self.progress_frame.hide()
        self.add_button.setEnabled(True)
        self._show_folders()
        self.busy_changed.emit(False, False)

    def shutdown(self, wait_ms: int = 30000) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker.wait(wait_ms)


def _summary_message(summary: IndexSummary, *, rebuilt: bool) -> tuple[str, str]:
    """(kind, text) of the banner after indexing: what was done, then every note the engine
    made (the `nfp index` command prints the same notes)."""
    kind, text = _outcome_message(summary, rebuilt)
    return kind, " ".join(filter(None, [text, *map(_sentence, summary.notes)]))


def _outcome_message(summary: IndexSummary, rebuilt: bool) -> tuple[str, str]:
    kept = "The previous index is unchanged." if rebuilt else "Files indexed so far are kept."
    if summary.cancelled:
        return "notice", f"Indexing cancelled. {kept}"
    parts = [f"{summary.indexed} indexed", f"{summary.unchanged} unchanged"]
    counted = (
        (summary.moved, "moved"),
        (summary.removed, "removed"),
        (summary.repaired, "repaired"),
        (summary.refreshed, "fingerprinted again (silence now left out)"),
    )
    parts += [f"{n} {what}" for n, what in counted if n]
    if summary.skipped:
        parts.append(f"{len(summary.skipped)} skipped (see Skipped files)")
    if summary.skipped and not summary.indexed and not summary.unchanged and not summary.moved:
        path, reason = summary.skipped[0]
        detail = reason if reason.startswith(path) else f"{path}: {reason}"
        return "error", f"Nothing could be indexed. {detail}" + (f" {kept}" if rebuilt else "")
    if rebuilt and not summary.replaced:
        return "notice", ""  # found no audio: the engine's note says so, and that it kept the old
    done = "Library rebuilt" if rebuilt else "Library updated"
    return "info", f"{done}: {', '.join(parts)}."


def _sentence(note: str) -> str:
    """An engine note ("kept 2 tracks in folders that could not be read") as a sentence."""
    return f"{note[:1].upper()}{note[1:]}."


def _folder_label(folder: str) -> str:
    """A folder as the list shows it: marked where it is missing (its tracks are kept)."""
    return folder if Path(folder).is_dir() else f"{folder} (missing: its tracks are kept)"
