"""The listen panel: the Listen button, the level meter and the large match display.

The microphone and the LiveMatcher run in a worker; this panel only shows what the LiveStates
say. Between states the position is extrapolated by a PositionClock so it ticks smoothly.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.api import LiveState, Match
from nfp_desktop.context import AppContext
from nfp_desktop.formatting import format_position, plural
from nfp_desktop.history import MICROPHONE, HistoryEntry
from nfp_desktop.position import PositionClock
from nfp_desktop.track_menu import track_menu, track_ref
from nfp_desktop.widgets import ConfidenceBar, ElidedLabel, LevelMeter
from nfp_desktop.workers import DeviceOpened, FileResult, GeneratorWorker, identify_job, listen_job

TICK_MS = 200  # position refresh between LiveStates
IDLE_TEXT = "Press Listen (Ctrl+L) while music plays, or drop an audio file on this window."
NO_MATCH_TEXT = "This music is not in your library, or it is too quiet to recognise."
EMPTY_LIBRARY_TEXT = "Add a music folder in the Library tab (Ctrl+Shift+O), then press Listen."
SILENCE_TEXT = (
    "The input is silent: is the music playing, and is the right input chosen in Settings?"
)
SILENCE_DB = -55.0  # below this the input is taken for silence (a muted or wrong device)
CONTROLS_WIDTH = 210  # the left column keeps its width whatever the device is called


class ListenPanel(QWidget):
    identified = Signal(object)  # HistoryEntry, once per newly matched track or file
    tracklist_ready = Signal(object)  # FileResult of a long file
    message = Signal(str, str)  # kind ("notice" | "info"), text
    error = Signal(object)  # an exception from the engine, shown in the window
    listening_changed = Signal(bool)

    def __init__(self, app: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.app = app
        # idle | starting | listening | matched | last_heard | no_match | identifying
        self.state = "idle"
        self.clock = PositionClock()
        self._match: Match | None = None
        self._last_track_id: int | None = None
        self._last_heard_at: time.struct_time | None = None  # wall clock of the last match
        self._worker: GeneratorWorker | None = None
        self._library_empty = False
        self.last_live: LiveState | None = None  # the newest state from the listen worker
        self._blocked_reason = ""  # why listening is not possible right now, or ""
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._show_position)
        self._build()
        self._show_ready()

    # ---- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.listen_button = QPushButton("Listen")
        self.listen_button.setObjectName("listenButton")
        self.listen_button.setMinimumSize(180, 64)
        self.listen_button.setToolTip("Start or stop listening (Ctrl+L)")
        self.listen_button.clicked.connect(self.toggle_listening)
        self.continuous_box = QCheckBox("Keep listening")
        self.continuous_box.setToolTip("Follow the music and identify each new track")
        self.continuous_box.setChecked(self.app.prefs.continuous)
        self.continuous_box.toggled.connect(self._remember_continuous)
        self.identify_button = QPushButton("Identify a file…")
        self.device_label = QLabel(f"Input: {self.app.prefs.device or 'system default'}")
        self.device_label.setObjectName("dim")
        self.level_meter = LevelMeter()

        controls = QVBoxLayout()
        controls.setSpacing(8)
        controls.addWidget(self.listen_button)
        controls.addWidget(self.continuous_box)
        controls.addWidget(self.identify_button)
        controls.addStretch(1)
        controls.addWidget(self.device_label)
        controls.addWidget(self.level_meter)

        holder = QWidget()
        holder.setFixedWidth(CONTROLS_WIDTH)
        holder.setLayout(controls)
        controls.setContentsMargins(0, 0, 0, 0)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(18)
        layout.addWidget(holder)
        self.match_card = self._build_match_card()
        self.match_card.setAccessibleName("The track playing")
        self.match_card.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.match_card.customContextMenuRequested.connect(self._match_menu)
        layout.addWidget(self.match_card, 1)

    def _build_match_card(self) -> QFrame:
        card = QFrame()
        card.setObjectName("matchCard")
        self.status_label = _label("", 13, object_name="status")
        self.title_label = _label("", 26, bold=True, elided=True)
        self.artist_label = _label("", 15)
        self.position_label = _label("", 22, object_name="position")
        self.position_bar = QProgressBar()
        self.position_bar.setAccessibleName("Position in the track")
        self.position_bar.setTextVisible(False)
        self.position_bar.setFixedHeight(6)
        self.position_bar.setRange(0, 1000)
        self.confidence_bar = ConfidenceBar()
        layout = QVBoxLayout(card)
        layout.setContentsMargins(22, 18, 22, 18)
        layout.setSpacing(6)
        layout.addWidget(self.status_label)
        layout.addWidget(self.title_label)
        layout.addWidget(self.artist_label)
        layout.addSpacing(6)
        layout.addWidget(self.position_label)
        layout.addWidget(self.position_bar)
        layout.addSpacing(4)
        layout.addWidget(self.confidence_bar)
        layout.addStretch(1)
        card.setMinimumHeight(210)
        return card

    # ---- listening ----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._worker is not None

    def toggle_listening(self) -> None:
        if not self.busy:
            self.start_listening()
        else:  # listening stops; a file being identified is cancelled
            self.stop()

    def start_listening(self) -> None:
        if self.busy:
            return
        if self._blocked_reason:
            self.message.emit("notice", self._blocked_reason)
            return
        job = listen_job(
            self.app.session, self.app.prefs.device, continuous=self.continuous_box.isChecked()
        )
        self._last_track_id = None
        self._start(job, self.show_live, self._on_listen_done)
        self.state = "starting"
        self._show_idle("Opening the microphone…")
        self.set_listening_look(True)

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def show_live(self, item: object) -> None:
        """Show what the listen worker reports: the device it opened or a LiveState."""
        if isinstance(item, DeviceOpened):
            self.device_label.setText(f"Input: {item.name}")
            self.device_label.setToolTip(item.name)
            if item.notice:
                self.message.emit("notice", item.notice)
            return
        assert isinstance(item, LiveState)
        self.last_live = item
        self.level_meter.set_level_db(item.level_db)
        if item.match is not None:
            self._show_live_match(item.match)
        elif self.state in ("matched", "last_heard"):
            self._show_last_heard()
        elif item.level_db < SILENCE_DB:
            self.state = "listening"
            self._show_idle("Listening…", SILENCE_TEXT)
        elif item.status == "no_match":
            self._show_no_match()
        else:
            self.state = "listening"
            heard = f"Heard {item.heard_s:.0f} s of audio" if item.heard_s >= 1 else "Starting"
            self._show_idle("Listening…", f"{heard} — an answer usually comes within seconds.")

    def _show_live_match(self, match: Match) -> None:
        now = time.monotonic()
        new_track = match.track.id != self._last_track_id
        self.clock.lock(match.offset_s, match.track.duration_s, now)
        if not self._timer.isActive():
            self._timer.start()
        self.state = "matched"
        self._last_heard_at = time.localtime()
        self._show_match(match, "Now playing")
        if new_track:
            self._last_track_id = match.track.id
            self.identified.emit(HistoryEntry.from_match(match, MICROPHONE))

    def _on_listen_done(self, final: LiveState | None) -> None:
        self.clock.freeze(time.monotonic())
        self._timer.stop()
        self.level_meter.set_level_db(-120.0)
        if final is not None and final.match is not None:
            self.status_label.setText("Identified")
            self._show_position()
        elif self.state == "matched":
            self.status_label.setText("Stopped")
        elif self.state == "last_heard":
            pass  # the greyed last match stays
        elif self.state != "no_match":
            self._show_ready()

    # ---- files --------------------------------------------------------------------------------
    def identify_file(self, path: Path) -> None:
        if self.busy:
            self.message.emit("notice", "Stop listening first, then identify the file.")
            return
        if self._blocked_reason:
            self.message.emit("notice", self._blocked_reason)
            return
        job = identify_job(self.app.session, Path(path))
        self._start(job, lambda step: self._show_idle(*step), self._on_file_done)
        self.state = "identifying"
        self._show_idle(f"Reading {Path(path).name}…")
        self.set_listening_look(True, "Cancel")

    def _on_file_done(self, result: FileResult) -> None:
        source = str(result.path)
        if result.cancelled:
            self._show_idle("Cancelled", f"The track list of {result.path.name} was stopped.")
        elif result.tracklist is not None:
            self._show_idle(
                f"{plural(len(result.tracklist), 'track')} found",
                f"In {result.path.name}: see the Track list tab.",
            )
            for entry in result.tracklist:
                self.identified.emit(HistoryEntry.from_tracklist(entry, source))
            self.tracklist_ready.emit(result)
        elif result.match is not None:
            self.clock.hold(result.match.offset_s, result.match.track.duration_s)
            self._show_match(result.match, f"In {result.path.name}, starting at")
            self.identified.emit(HistoryEntry.from_match(result.match, source))
            self.state = "idle"
        else:
            self._show_no_match(f"{result.path.name}: no match in your library.")

    # ---- worker plumbing ----------------------------------------------------------------------
    def _start(self, job, on_progress, on_success) -> None:
        worker = GeneratorWorker(job, self)
        worker.progressed.connect(on_progress)
        worker.succeeded.connect(on_success)
        worker.failed.connect(self._on_failed)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.identify_button.setEnabled(False)
        worker.start()

    def _on_failed(self, error: Exception) -> None:
        self._timer.stop()
        title = "Could not identify the file" if self.state == "identifying" else "Not listening"
        self.state = "error"
        self._show_idle(title, "See the message above.")
        self.error.emit(error)

    def _on_finished(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.deleteLater()
        if self.state in ("starting", "listening", "no_match", "identifying"):
            self.state = "idle"
        self.set_listening_look(False)
        self.identify_button.setEnabled(True)

    def shutdown(self, wait_ms: int = 5000) -> None:
        """Stop the worker and wait for it (the window is closing)."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker.wait(wait_ms)

    def set_listen_enabled(self, enabled: bool, reason: str = "") -> None:
        """Allow listening and identifying (or not, and say why when asked anyway)."""
        self._blocked_reason = "" if enabled else reason
        self.listen_button.setEnabled(enabled or self.busy)
        self.identify_button.setEnabled(enabled and not self.busy)
        self.listen_button.setToolTip("Start or stop listening (Ctrl+L)" if enabled else reason)
        if self.state == "idle" and not self.busy:
            self._show_ready()

    # ---- display ------------------------------------------------------------------------------
    def _show_match(self, match: Match, status: str) -> None:
        track = match.track
        self._match = match
        self.match_card.setEnabled(True)
        self.match_card.setAccessibleDescription(status)
        self.status_label.setText(status)
        self.status_label.show()
        self.title_label.setText(track.title)
        self.artist_label.setText(" — ".join(x for x in (track.artist, track.album) if x))
        self.confidence_bar.set_confidence(match.confidence)
        self.position_bar.show()
        self._show_position()

    def _match_menu(self, point) -> None:
        """Right-click on the card: the matched track's menu (nfp_desktop.track_menu)."""
        if self._match is not None:
            menu = track_menu(self.match_card, track_ref(self._match.track))
            menu.popup(self.match_card.mapToGlobal(point))

    def _show_last_heard(self) -> None:
        """The music stopped, or turned to something not in the library: the last match stays,
        greyed and frozen, saying when it was heard, until another track is matched."""
        if self.state != "last_heard":
            self.state = "last_heard"
            self.clock.freeze(time.monotonic())
            self._timer.stop()
            heard = time.strftime("%H:%M", self._last_heard_at or time.localtime())
            self.status_label.setText(f"Last heard at {heard}")
            self.match_card.setEnabled(False)  # Qt greys the text of a disabled widget
            self.match_card.setAccessibleDescription(f"Last heard at {heard}, not playing now")

    def _show_position(self) -> None:
        if self._match is None:
            return
        position_s = self.position_s()
        duration_s = self._match.track.duration_s
        self.position_label.setText(format_position(position_s, duration_s))
        self.position_bar.setValue(round(1000 * position_s / duration_s) if duration_s else 0)

    def position_s(self) -> float:
        """The position shown now (seconds into the matched track)."""
        return self.clock.position(time.monotonic())

    def _show_no_match(self, detail: str = NO_MATCH_TEXT) -> None:
        self.state = "no_match"
        self._show_idle("No match", detail)

    def _show_idle(self, title: str, detail: str = "") -> None:
        """The card without a match: a large title saying what happens, a line of detail."""
        self._match = None
        self.match_card.setEnabled(True)
        self._timer.stop()
        self.clock.clear()
        self.status_label.hide()
        self.title_label.setText(title)
        self.artist_label.setText(detail)
        self.position_label.setText("")
        self.position_bar.hide()
        self.confidence_bar.set_confidence(None)

    def set_library_empty(self, empty: bool) -> None:
        """Say what to do first when there is nothing to match against."""
        self._library_empty = empty
        if self.state == "idle" and not self.busy:
            self._show_ready()

    def _show_ready(self) -> None:
        if self._blocked_reason:
            self._show_idle("Indexing your library…", self._blocked_reason)
        elif self._library_empty:
            self._show_idle("Your library is empty", EMPTY_LIBRARY_TEXT)
        else:
            self._show_idle("Ready", IDLE_TEXT)

    def set_listening_look(self, listening: bool, busy_text: str = "Stop") -> None:
        """The Listen button while the panel is idle, or busy (listening: Stop; a file: Cancel)."""
        self.listen_button.setText(busy_text if listening else "Listen")
        self.listen_button.setProperty("listening", listening)
        self.listen_button.style().unpolish(self.listen_button)
        self.listen_button.style().polish(self.listen_button)
        self.listening_changed.emit(listening and busy_text == "Stop")

    def _remember_continuous(self, checked: bool) -> None:
        self.app.prefs.continuous = checked
        self.app.save()


def _label(
    text: str, point_size: int, *, bold: bool = False, object_name: str = "", elided: bool = False
) -> QLabel:
    """A card label: wrapping, or one elided line (a long title would push the card over)."""
    label = ElidedLabel(text) if elided else QLabel(text)
    font = QFont()
    font.setPointSize(point_size)
    font.setBold(bold)
    label.setFont(font)
    label.setWordWrap(not elided)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if object_name:
        label.setObjectName(object_name)
    return label
