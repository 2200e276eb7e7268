"""Settings: QSettings round trip and the settings dialog's choices."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from engine.core.errors import NoInputDeviceError
from engine.core.mic import InputDevice
from nfp_desktop.preferences import (
    Preferences,
    default_data_dir,
    describe_checkpoint,
    load_preferences,
    save_preferences,
)
from nfp_desktop.settings_dialog import CHOOSE_FILE, SettingsDialog
from tests.support.desktop_helpers import spectral_checkpoint_file

pytestmark = pytest.mark.gui

DEVICES = [
    InputDevice(0, "Built-in microphone", 2, 44100.0, True),
    InputDevice(3, "Monitor of Built-in Audio", 2, 48000.0, False),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return [
        spectral_checkpoint_file(root / "nfp-scnn-d128.pt", d=128),
        spectral_checkpoint_file(root / "nfp-scnn-d64.pt", d=64),
    ]


def make_dialog(
    qtbot, prefs: Preferences, checkpoints: list[Path], devices=DEVICES
) -> SettingsDialog:
    def list_devices() -> list[InputDevice]:
        if isinstance(devices, Exception):
            raise devices
        return list(devices)

    dialog = SettingsDialog(
        prefs,
        list_devices=list_devices,
        shipped=lambda: [describe_checkpoint(p) for p in checkpoints],
    )
    qtbot.addWidget(dialog)
    return dialog


def test_preferences_round_trip_through_qsettings(tmp_path) -> None:
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    assert load_preferences(settings) == Preferences()  # defaults when nothing is saved
    assert Preferences().data_dir == str(default_data_dir())
    for folders in ([], ["/music"], ["/music", "/more music"]):
        prefs = Preferences("/c.pt", "USB mic", str(tmp_path / "data"), folders, False)
        save_preferences(settings, prefs)
        again = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
        assert load_preferences(again) == prefs
    assert Preferences(data_dir="/d").db_dir == Path("/d/library")


def test_dialog_offers_checkpoints_and_their_dimensions(qtbot, checkpoints) -> None:
    dialog = make_dialog(qtbot, Preferences(), checkpoints)
    combo = dialog.checkpoint_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "nfp-scnn-d128  (spectral-test, d = 128)",
        "nfp-scnn-d64  (spectral-test, d = 64)",
        CHOOSE_FILE,
    ]
    dims = dialog.dimension_combo
    assert [dims.itemText(i) for i in range(dims.count())] == [
        "64 (smaller library, a little less accurate)",
        "128 (most accurate)",
    ]
    assert dims.currentData() == 128 and not dialog.reindex_label.isVisibleTo(dialog)
    dialog.select_dimension(64)
    assert combo.currentIndex() == 1 and dialog.reindex_label.isVisibleTo(dialog)
    assert dialog.preferences().checkpoint == str(checkpoints[1].resolve())
    dialog.select_dimension(128)
    assert dialog.preferences().checkpoint == "" and not dialog.reindex_label.isVisibleTo(dialog)


def test_dialog_accepts_a_checkpoint_file_and_refuses_a_bad_one(
    qtbot, checkpoints, tmp_path
) -> None:
    dialog = make_dialog(qtbot, Preferences(), checkpoints)
    custom = spectral_checkpoint_file(tmp_path / "mine.pt", d=32)
    assert dialog.choose_checkpoint_file(custom)
    assert dialog.selected_choice().d == 32 and dialog.dimension_combo.currentData() == 32
    assert dialog.preferences().checkpoint == str(custom.resolve())
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert not dialog.choose_checkpoint_file(bad)
    assert "bad.pt" in dialog.checkpoint_error.text() and dialog.checkpoint_error.isVisibleTo(
        dialog
    )
    assert dialog.selected_choice().path == checkpoints[0].resolve()  # back to what was saved


def test_dialog_remembers_a_custom_checkpoint(qtbot, checkpoints, tmp_path) -> None:
    custom = spectral_checkpoint_file(tmp_path / "mine.pt", d=32)
    dialog = make_dialog(qtbot, Preferences(checkpoint=str(custom)), checkpoints)
    assert dialog.selected_choice().path == custom.resolve()
    assert dialog.preferences().checkpoint == str(custom.resolve())


def test_dialog_says_when_the_saved_checkpoint_is_gone(qtbot, checkpoints, tmp_path) -> None:
    dialog = make_dialog(qtbot, Preferences(checkpoint=str(tmp_path / "deleted.pt")), checkpoints)
    assert "deleted.pt" in dialog.checkpoint_error.text()
    assert dialog.selected_choice().path == checkpoints[0].resolve()


def test_dialog_lists_devices_and_notices_a_vanished_one(qtbot, checkpoints) -> None:
    dialog = make_dialog(qtbot, Preferences(device="Monitor of Built-in Audio"), checkpoints)
    combo = dialog.device_combo
    assert combo.itemText(0) == "System default (Built-in microphone)"
    assert combo.currentText() == "Monitor of Built-in Audio" and not dialog.device_notice.text()
    dialog = make_dialog(qtbot, Preferences(device="USB headset"), checkpoints)
    assert combo is not dialog.device_combo and dialog.device_combo.currentIndex() == 0
    assert "USB headset" in dialog.device_notice.text()
    assert dialog.preferences().device == ""


def test_dialog_refreshes_devices_on_demand(qtbot, checkpoints) -> None:
    devices = list(DEVICES)
    dialog = make_dialog(qtbot, Preferences(), checkpoints, devices=devices)
    devices.append(InputDevice(5, "USB headset", 1, 48000.0, False))
    assert dialog.device_combo.count() == 3
    dialog.refresh_button.click()
    assert dialog.device_combo.count() == 4
    dialog.device_combo.setCurrentIndex(3)
    assert dialog.preferences().device == "USB headset"


def test_dialog_without_any_input_device(qtbot, checkpoints) -> None:
    error = NoInputDeviceError("PortAudio is not available: no library")
    dialog = make_dialog(qtbot, Preferences(), checkpoints, devices=error)
    assert dialog.device_combo.currentText() == "(no input device)"
    assert "PortAudio is not available" in dialog.device_notice.text()
    assert dialog.preferences().device == ""


def test_dialog_edits_the_data_directory(qtbot, checkpoints, tmp_path) -> None:
    dialog = make_dialog(qtbot, Preferences(data_dir="/old"), checkpoints)
    dialog.data_dir_edit.setText(str(tmp_path))
    assert dialog.preferences().data_dir == str(tmp_path)
    dialog.data_dir_edit.setText("  ")
    assert dialog.preferences().data_dir == "/old"


def test_encoder_precision_is_a_setting_that_survives_a_restart(qtbot, tmp_path, checkpoints):
    dialog = make_dialog(qtbot, Preferences(data_dir=str(tmp_path)), checkpoints)
    assert dialog.precision_combo.currentData() == "auto"
    dialog.precision_combo.setCurrentIndex(dialog.precision_combo.findData("float32"))
    prefs = dialog.preferences()
    assert prefs.precision == "float32"
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    save_preferences(settings, prefs)
    assert load_preferences(settings).precision == "float32"
    settings.setValue("engine/precision", "fp8")  # a value this version does not know
    assert load_preferences(settings).precision == "auto"


def test_the_precision_choice_is_offered_only_where_it_does_something(qtbot, monkeypatch) -> None:
    """ONNX Runtime (the default) runs float32 only, unless an int8 twin sits beside the export;
    torch has the probed bfloat16 path."""
    dialog = SettingsDialog(Preferences(), list_devices=lambda: [])
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.precision_combo.isVisible()
    monkeypatch.setenv("NFP_BACKEND", "torch")
    on_torch = SettingsDialog(Preferences(), list_devices=lambda: [])
    qtbot.addWidget(on_torch)
    on_torch.show()
    assert on_torch.precision_combo.isVisible()


def test_an_int8_twin_beside_the_selected_export_offers_int8(qtbot, tmp_path) -> None:
    pt = spectral_checkpoint_file(tmp_path / "nfp-scnn-d128.pt", d=128)
    other = spectral_checkpoint_file(tmp_path / "nfp-scnn-d64.pt", d=64)
    (tmp_path / "nfp-scnn-d128.int8.onnx").write_bytes(b"")  # only its presence counts here
    dialog = make_dialog(qtbot, Preferences(), [pt, other])
    dialog.show()
    combo = dialog.precision_combo
    assert combo.isVisible()
    assert [combo.itemData(i) for i in range(combo.count())] == ["auto", "float32", "int8"]
    dialog.checkpoint_combo.setCurrentIndex(1)
    dialog.checkpoint_combo.activated.emit(1)
    assert not combo.isVisible()
