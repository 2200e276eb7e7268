"""The settings dialog: checkpoint, fingerprint dimension, input device, data directory."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.api import (
    DEFAULT_CHECKPOINT,
    InputDevice,
    NfpError,
    fast_precision,
    input_devices,
)
from nfp_desktop.preferences import (
    CheckpointChoice,
    Preferences,
    describe_checkpoint,
    pick_device,
    shipped_choices,
)

CHOOSE_FILE = "Choose a file…"
# A fast path (bfloat16 on torch, an int8 twin on ONNX Runtime) is only ever chosen where a probe
# proves it right on this machine (engine.model.fingerprint); forcing one skips the probe.
DIALOG_WIDTH = 560
PRECISION_CHOICES = (
    ("auto", "Automatic (fastest that is right on this computer)"),
    ("float32", "float32 (always right, slower)"),
    ("bfloat16", "bfloat16 (forced, even where the self-test finds it wrong)"),
    ("int8", "int8 (forced, even where the self-test finds it wrong)"),
)
REINDEX_NOTE = (
    "A different model makes different fingerprints: the library must be re-indexed. "
    "The current index stays in use until the new one is complete."
)


class SettingsDialog(QDialog):
    def __init__(
        self,
        prefs: Preferences,
        *,
        list_devices: Callable[[], list[InputDevice]] = input_devices,
        shipped: Callable[[], list[CheckpointChoice]] = shipped_choices,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._prefs = prefs
        self._list_devices = list_devices
        self._choices = shipped()
        self._build()
        self._initial = self._current_choice_path(prefs)
        self._fill_checkpoints(self._initial)
        self.refresh_devices()

    def _current_choice_path(self, prefs: Preferences) -> Path | None:
        if not prefs.checkpoint:
            return self._choices[0].path if self._choices else None
        try:
            choice = describe_checkpoint(Path(prefs.checkpoint))
        except NfpError as e:
            self._show_checkpoint_error(f"{e}. The shipped default is selected instead.")
            return None
        if all(c.path != choice.path for c in self._choices):
            self._choices.append(choice)
        return choice.path

    # ---- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.checkpoint_combo = QComboBox()
        self.checkpoint_combo.activated.connect(self._on_checkpoint_activated)
        self.dimension_combo = QComboBox()
        self.dimension_combo.activated.connect(self._on_dimension_activated)
        self.reindex_label = _note(REINDEX_NOTE)
        self.device_combo = QComboBox()
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh_devices)
        self.device_notice = _note("")
        self.data_dir_edit = QLineEdit(self._prefs.data_dir)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_data_dir)
        self.checkpoint_error = _note("")
        self.precision_combo = QComboBox()

        form = self._form = QFormLayout()
        form.setSpacing(10)
        form.addRow("Recognition model:", self.checkpoint_combo)
        form.addRow("", self.checkpoint_error)
        form.addRow("Fingerprint size:", self.dimension_combo)
        form.addRow("", self.reindex_label)
        form.addRow("Encoder precision:", self.precision_combo)
        form.addRow("Input device:", _row(self.device_combo, self.refresh_button))
        self.tray_box = QCheckBox("Closing the window keeps listening in the system tray")
        self.tray_box.setChecked(self._prefs.close_to_tray)
        self.notify_box = QCheckBox("Show a desktop notification for each new match")
        self.notify_box.setChecked(self._prefs.notify)
        form.addRow("In the background:", self.tray_box)
        form.addRow("", self.notify_box)
        form.addRow("", self.device_notice)
        form.addRow("Data directory:", _row(self.data_dir_edit, browse))
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(18, 18, 18, 18)
        layout.addLayout(form)
        layout.addStretch(1)
        layout.addWidget(buttons)
        # The layout's minimum is the dialog's, so a note that appears (re-index) makes room for
        # itself instead of being squeezed into a sliver; a minimum width set by hand would
        # switch that off (Qt keeps a minimum already set).
        layout.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)
        self.resize(max(DIALOG_WIDTH, self.sizeHint().width()), self.sizeHint().height())

    # ---- checkpoints and dimensions -------------------------------------------------------------
    def _fill_checkpoints(self, selected: Path | None) -> None:
        self.checkpoint_combo.clear()
        for choice in self._choices:
            self.checkpoint_combo.addItem(choice.label, choice)
        self.checkpoint_combo.addItem(CHOOSE_FILE, None)
        paths = [c.path for c in self._choices]
        self.checkpoint_combo.setCurrentIndex(paths.index(selected) if selected in paths else 0)
        self.dimension_combo.clear()
        sizes = sorted({c.d for c in self._choices})
        for d in sizes:
            self.dimension_combo.addItem(_size_label(d, sizes), d)
        self._sync_dimension()

    def selected_choice(self) -> CheckpointChoice | None:
        return self.checkpoint_combo.currentData()

    def _sync_dimension(self) -> None:
        choice = self.selected_choice()
        if choice is not None:
            self.dimension_combo.setCurrentIndex(self.dimension_combo.findData(choice.d))
        self.reindex_label.setVisible(choice is not None and choice.path != self._initial)
        self._sync_precision(choice)
        self.adjustSize()  # the note's lines need room: QFormLayout does not grow the dialog

    def _sync_precision(self, choice: CheckpointChoice | None) -> None:
        """Offer the fast path the selected checkpoint has here: bfloat16 on torch, int8 where
        an int8 twin sits beside its export; with neither, the choice does nothing and is
        hidden. The saved choice stays among them, so a hidden row never changes it."""
        kept = self.precision_combo.currentData() or self._prefs.precision
        fast = fast_precision(choice.path if choice is not None else None)
        self.precision_combo.clear()
        for value, label in PRECISION_CHOICES:
            if value in ("auto", "float32", fast, self._prefs.precision):
                self.precision_combo.addItem(label, value)
        self.precision_combo.setCurrentIndex(max(0, self.precision_combo.findData(kept)))
        self._form.setRowVisible(self.precision_combo, fast is not None)

    def _on_checkpoint_activated(self, row: int) -> None:
        if self.checkpoint_combo.itemData(row) is None:
            path, _ = QFileDialog.getOpenFileName(
                self, "Choose a checkpoint", "", "nfp checkpoints (*.pt)"
            )
            if not path:
                self._fill_checkpoints(self._initial)
                return
            self.choose_checkpoint_file(Path(path))
        self._sync_dimension()

    def choose_checkpoint_file(self, path: Path) -> bool:
        """Add a checkpoint file to the choices and select it; False (and a note) if unusable."""
        try:
            choice = describe_checkpoint(path)
        except NfpError as e:
            self._show_checkpoint_error(str(e))
            self._fill_checkpoints(self._initial)
            return False
        self._show_checkpoint_error("")
        if all(c.path != choice.path for c in self._choices):
            self._choices.append(choice)
        self._fill_checkpoints(choice.path)
        return True

    def _show_checkpoint_error(self, text: str) -> None:
        self.checkpoint_error.setText(text)
        self.checkpoint_error.setVisible(bool(text))

    def _on_dimension_activated(self, row: int) -> None:
        self.select_dimension(self.dimension_combo.itemData(row))

    def select_dimension(self, d: int) -> None:
        """Pick the first checkpoint (shipped ones first) that makes d-dimensional fingerprints."""
        choice = self.selected_choice()
        if choice is None or choice.d != d:
            row = next(i for i, c in enumerate(self._choices) if c.d == d)
            self.checkpoint_combo.setCurrentIndex(row)
        self._sync_dimension()

    # ---- devices ------------------------------------------------------------------------------
    def refresh_devices(self) -> None:
        """List the input devices again (a headset plugged in since the dialog opened)."""
        self.device_combo.clear()
        try:
            devices = self._list_devices()
            default = pick_device("", devices)[0]
            notice = pick_device(self._prefs.device, devices)[1]
        except NfpError as e:
            self.device_combo.addItem("(no input device)", "")
            self._show_device_notice(str(e))
            return
        self.device_combo.addItem(f"System default ({default.name})", "")
        for device in devices:
            self.device_combo.addItem(device.name, device.name)
        row = self.device_combo.findData(self._prefs.device) if not notice else 0
        self.device_combo.setCurrentIndex(max(row, 0))
        self._show_device_notice(notice)

    def _show_device_notice(self, text: str) -> None:
        self.device_notice.setText(text)
        self.device_notice.setVisible(bool(text))

    def _browse_data_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Data directory", self.data_dir_edit.text())
        if folder:
            self.data_dir_edit.setText(folder)

    # ---- result -------------------------------------------------------------------------------
    def preferences(self) -> Preferences:
        """The preferences as edited (the ones passed in are left alone)."""
        choice = self.selected_choice()
        if choice is None:
            checkpoint = self._prefs.checkpoint
        elif choice.path.stem == Path(DEFAULT_CHECKPOINT).stem and choice == self._choices[0]:
            checkpoint = ""  # follow the shipped default, even when an update replaces the file
        else:
            checkpoint = str(choice.path)
        return dataclasses.replace(
            self._prefs,
            checkpoint=checkpoint,
            device=self.device_combo.currentData() or "",
            data_dir=self.data_dir_edit.text().strip() or self._prefs.data_dir,
            folders=list(self._prefs.folders),
            precision=self.precision_combo.currentData() or "auto",
            close_to_tray=self.tray_box.isChecked(),
            notify=self.notify_box.isChecked(),
        )


def _size_label(d: int, sizes: list[int]) -> str:
    """A fingerprint size in plain words: the largest is the most accurate, others save space."""
    if d == max(sizes):
        return f"{d} (most accurate)"
    return f"{d} (smaller library, a little less accurate)"


def _row(*widgets: QWidget) -> QWidget:
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if i == 0 else 0)
    return holder


def _note(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setObjectName("note")
    label.setVisible(bool(text))
    return label
