"""The main window end to end on generated music: indexing, listening, files, every error state."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gc
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QTimer, QUrl
from PySide6.QtGui import (
    QColor,
    QDesktopServices,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QPalette,
)
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHeaderView,
    QLineEdit,
    QProgressBar,
    QWidget,
)

import nfp_desktop.workers as workers
from engine.library.tracks import Track
from engine.query.search import Match
from engine.query.stream import LiveState
from nfp_desktop.app import main
from nfp_desktop.context import AppContext
from nfp_desktop.main_window import MainWindow, styled
from nfp_desktop.preferences import load_preferences
from nfp_desktop.track_menu import track_menu, track_ref
from tests.support.audio_files import music_like, write_audio
from tests.support.desktop_helpers import (
    MIC_RATE,
    index_library,
    install_fake_mic,
    make_context,
    spectral_checkpoint_file,
    track_audio,
)

pytestmark = pytest.mark.gui
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def spectral_path(tmp_path_factory) -> Path:
    return spectral_checkpoint_file(tmp_path_factory.mktemp("ckpt") / "spectral.pt")


@pytest.fixture
def window(qtbot, tmp_path, music_dir, spectral_path) -> MainWindow:
    """A window over an indexed library of the three generated tracks."""
    index_library(tmp_path / "data" / "library", music_dir, spectral_path)
    return open_window(qtbot, tmp_path, spectral_path, folders=[music_dir])


def open_window(qtbot, tmp_path: Path, checkpoint: Path, folders=()) -> MainWindow:
    window = MainWindow(make_context(tmp_path, checkpoint=checkpoint, folders=list(folders)))
    qtbot.addWidget(window)
    window.show()
    return window


def wait_idle(qtbot, window: MainWindow) -> None:
    qtbot.waitUntil(
        lambda: not window.library_panel.busy and not window.listen_panel.busy, timeout=WAIT_MS
    )


# ---- library -----------------------------------------------------------------------------------
def test_empty_window_invites_to_add_a_folder(qtbot, tmp_path, spectral_path) -> None:
    window = open_window(qtbot, tmp_path, spectral_path)
    assert "add one" in window.library_panel.folders_label.text()
    assert window.library_panel.tracks_model.rowCount() == 0
    assert "Library is empty" in window.status_label.text()
    assert window.listen_panel.title_label.text() == "Your library is empty"
    assert not window.banner.isVisible()


def test_adding_a_folder_indexes_it_with_progress(
    qtbot, tmp_path, music_dir, spectral_path
) -> None:
    window = open_window(qtbot, tmp_path, spectral_path)
    panel = window.library_panel
    progress = []
    window.library_panel.add_folder(music_dir)
    assert panel.progress_frame.isVisible() and not window.listen_panel.listen_button.isEnabled()
    panel._worker.progressed.connect(lambda step: progress.append(panel.eta_label.text()))
    rows_seen, status_seen = [], []
    panel._worker.progressed.connect(lambda step: rows_seen.append(panel.tracks_model.rowCount()))
    panel._worker.progressed.connect(lambda step: status_seen.append(window.status_label.text()))
    window.listen_action.trigger()  # the shortcut works while the button is disabled
    assert not window.listen_panel.busy and "when indexing has finished" in window.banner.text()
    wait_idle(qtbot, window)
    assert progress and not panel.progress_frame.isVisible()
    assert rows_seen[0] == 1 and rows_seen[-1] == 3  # the table fills while indexing
    assert status_seen[0].startswith("Indexing: 1 of 3 files")  # seen from any tab

    assert panel.tracks_model.rowCount() == 3 and "3 tracks" in panel.count_label.text()
    assert "3 indexed" in window.banner.text() and "3 tracks" in window.status_label.text()
    assert window.listen_panel.listen_button.isEnabled()
    panel.update_library()  # incremental: nothing changed
    wait_idle(qtbot, window)
    assert "0 indexed, 3 unchanged" in window.banner.text()
    panel.filter_edit.setText("three")
    assert panel.tracks_proxy.rowCount() == 1


def test_a_removed_folder_takes_its_tracks_out_and_a_missing_one_is_shown(
    qtbot, tmp_path, music_dir, spectral_path
) -> None:
    window = open_window(qtbot, tmp_path, spectral_path)
    panel = window.library_panel
    music = Path(shutil.copytree(music_dir, tmp_path / "music"))
    panel.add_folder(music)
    wait_idle(qtbot, window)
    assert panel.tracks_model.rowCount() == 3 and panel.remove_button.isEnabled()
    shutil.rmtree(music)
    panel.update_library()  # a missing folder keeps its tracks, and says so
    wait_idle(qtbot, window)
    assert panel.tracks_model.rowCount() == 3 and "(missing" in panel.folders_label.text()
    panel.remove_folder(str(music.resolve()))
    assert (
        panel.tracks_model.rowCount() == 0 and "3 tracks left the library" in window.banner.text()
    )
    assert "add one" in panel.folders_label.text() and not panel.remove_button.isEnabled()


def test_cancel_stops_indexing(qtbot, tmp_path, music_dir, spectral_path) -> None:
    window = open_window(qtbot, tmp_path, spectral_path)
    window.library_panel.add_folder(music_dir)
    qtbot.mouseClick(window.library_panel.cancel_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    assert "Indexing cancelled" in window.banner.text()


def test_missing_folder_and_bad_files_are_reported(qtbot, tmp_path, spectral_path) -> None:
    window = open_window(qtbot, tmp_path, spectral_path)
    window.library_panel.add_folder(tmp_path / "no-such-folder")
    wait_idle(qtbot, window)
    assert window.banner.kind == "error" and "no-such-folder: not a folder" in window.banner.text()
    music = tmp_path / "music"
    music.mkdir()
    (music / "broken.mp3").write_bytes(b"garbage")
    write_audio(music / "fine.wav", music_like(6.0, 8000, 5), 8000)
    window.library_panel.add_folder(music)
    wait_idle(qtbot, window)
    skipped = window.library_panel.skipped_model
    assert window.library_panel.skipped_box.isVisibleTo(window)
    assert [Path(p).name for p, _ in skipped.rows()] == ["broken.mp3"]
    assert "a damaged MP3 file" in skipped.rows()[0][1] and "1 skipped" in window.banner.text()
    window.close()  # a restart: the skips are the library's, not the window's
    again = open_window(qtbot, tmp_path, spectral_path, folders=[str(music.resolve())])
    kept = again.library_panel.skipped_model.rows()
    assert [Path(p).name for p, _ in kept] == ["broken.mp3"] and "a damaged MP3" in kept[0][1]
    assert again.library_panel.skipped_box.isVisibleTo(again)


def test_corrupt_index_is_reported_and_rebuilt_on_request(
    qtbot, tmp_path, music_dir, spectral_path
) -> None:
    (tmp_path / "data" / "library").mkdir(parents=True)
    (tmp_path / "data" / "library" / "tracks.sqlite").write_bytes(b"this is not sqlite" * 100)
    window = open_window(qtbot, tmp_path, spectral_path, folders=[music_dir])
    assert window.banner.kind == "error" and "library is damaged" in window.banner.text()
    assert window.banner.action_button.text() == "Re-index now"
    qtbot.mouseClick(window.banner.action_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    assert "Library rebuilt: 3 indexed" in window.banner.text()
    assert window.library_panel.tracks_model.rowCount() == 3


def test_lost_fingerprints_are_reported_when_listening(
    qtbot, monkeypatch, tmp_path, music_dir, spectral_path
) -> None:
    index_library(tmp_path / "data" / "library", music_dir, spectral_path)
    for vectors in (tmp_path / "data" / "library").glob("vectors-*.f32"):
        vectors.unlink()
    install_fake_mic(monkeypatch, np.zeros(MIC_RATE, np.float32))
    window = open_window(qtbot, tmp_path, spectral_path, folders=[music_dir])
    window.listen_panel.start_listening()
    wait_idle(qtbot, window)
    assert "library is damaged" in window.banner.text()
    assert window.banner.action_button.text() == "Re-index now"


# ---- listening ---------------------------------------------------------------------------------
def test_listening_shows_title_and_a_ticking_position(
    qtbot, monkeypatch, window, music_dir
) -> None:
    audio = track_audio(music_dir / "album" / "one.flac", 3.0, 14.0)
    install_fake_mic(monkeypatch, audio, pace=0.05)  # 2× real time
    panel = window.listen_panel
    qtbot.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: panel.state == "matched", timeout=WAIT_MS)
    assert panel.title_label.text() == "One" and "Test Artist" in panel.artist_label.text()
    assert panel.device_label.text() == "Input: Fake microphone"
    assert panel.position_label.text().endswith("/ 0:20")
    first = panel.position_s()
    # it ticks (and re-locks) while the music goes on: waited for as an event, not a time
    qtbot.waitUntil(lambda: panel.position_s() > first, timeout=WAIT_MS)
    assert panel.confidence_bar.isVisible() and panel.confidence_bar.value() >= 50
    assert panel.level_meter.level_db > -40
    qtbot.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)  # stop
    wait_idle(qtbot, window)
    assert panel.listen_button.text() == "Listen"
    assert [e.title for e in window.app.history.entries] == ["One"]
    assert window.history_panel.model.rowCount() == 1


def test_the_position_relocks_when_the_music_jumps(qtbot, monkeypatch, window, music_dir) -> None:
    two = music_dir / "album" / "two.mp3"
    audio = np.concatenate([track_audio(two, 2.0, 7.0), track_audio(two, 16.0, 9.0)])
    install_fake_mic(monkeypatch, audio, pace=0.05)
    panel = window.listen_panel
    panel.start_listening()
    qtbot.waitUntil(lambda: panel.state == "matched", timeout=WAIT_MS)
    assert panel.position_s() == pytest.approx(2.0 + panel.last_live.heard_s, abs=0.8)

    def relocked_after_the_jump() -> bool:
        heard_after_jump = panel.last_live.heard_s > 7.0
        return heard_after_jump and panel.state == "matched" and panel.position_s() > 16.0

    qtbot.waitUntil(relocked_after_the_jump, timeout=WAIT_MS)
    expected = 16.0 + panel.last_live.heard_s - 7.0
    assert panel.title_label.text() == "Two"
    assert panel.position_s() == pytest.approx(expected, abs=0.8)
    panel.stop()
    wait_idle(qtbot, window)
    assert [e.title for e in window.app.history.entries] == ["Two"]  # one play, one entry


def test_without_keep_listening_it_stops_at_the_first_answer(
    qtbot, monkeypatch, window, music_dir, tmp_path
) -> None:
    install_fake_mic(monkeypatch, track_audio(music_dir / "three.ogg", 4.0, 12.0), pace=0.005)
    window.listen_panel.continuous_box.setChecked(False)
    window.listen_panel.start_listening()
    wait_idle(qtbot, window)
    panel = window.listen_panel
    assert panel.state == "matched" and panel.title_label.text() == "Three"
    assert panel.status_label.text() == "Identified" and not panel.clock.running
    saved = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    assert not load_preferences(saved).continuous  # remembered for the next start


def test_music_not_in_the_library_says_no_match(qtbot, monkeypatch, window) -> None:
    stranger = np.repeat(music_like(14.0, 8000, 99), 2)
    install_fake_mic(monkeypatch, stranger, pace=0.005)
    window.listen_panel.start_listening()
    qtbot.waitUntil(lambda: window.listen_panel.state == "no_match", timeout=WAIT_MS)
    assert window.listen_panel.title_label.text() == "No match"
    assert "not in your library" in window.listen_panel.artist_label.text()
    wait_idle(qtbot, window)
    assert window.app.history.entries == []


def test_a_silent_input_is_pointed_out(qtbot, monkeypatch, window) -> None:
    install_fake_mic(monkeypatch, np.zeros(3 * MIC_RATE, np.float32), pace=0.005)
    window.listen_panel.start_listening()
    qtbot.waitUntil(lambda: "silent" in window.listen_panel.artist_label.text(), timeout=WAIT_MS)
    wait_idle(qtbot, window)


def test_no_input_device_is_a_message(qtbot, monkeypatch, window) -> None:
    monkeypatch.setattr(workers, "input_devices", lambda: [])
    window.listen_panel.start_listening()
    wait_idle(qtbot, window)
    assert window.banner.kind == "error" and "no audio input device" in window.banner.text()
    assert window.listen_panel.listen_button.text() == "Listen"


def test_unplugged_device_mid_listen_is_a_message(qtbot, monkeypatch, window, music_dir) -> None:
    audio = track_audio(music_dir / "three.ogg", 0.0, 10.0)
    install_fake_mic(monkeypatch, audio, pace=0.005, fail_after_s=1.0)
    window.listen_panel.start_listening()
    wait_idle(qtbot, window)
    assert "stopped delivering audio" in window.banner.text()
    assert window.listen_panel.state == "error"


def test_empty_library_is_a_message(qtbot, monkeypatch, tmp_path, spectral_path) -> None:
    install_fake_mic(monkeypatch, np.zeros(MIC_RATE, np.float32))
    window = open_window(qtbot, tmp_path, spectral_path)
    window.listen_panel.start_listening()
    wait_idle(qtbot, window)
    assert "the library is empty" in window.banner.text() and "Library tab" in window.banner.text()
    assert window.banner.action_button.text() == "Add music folder…"


# ---- files -------------------------------------------------------------------------------------
def test_dropping_a_short_file_identifies_it(qtbot, window, music_dir, tmp_path) -> None:
    clip = track_audio(music_dir / "album" / "two.mp3", 6.0, 6.0)
    window.handle_drop([write_audio(tmp_path / "clip.wav", clip, MIC_RATE)])
    wait_idle(qtbot, window)
    panel = window.listen_panel
    assert panel.title_label.text() == "Two" and panel.position_label.text() == "0:06 / 0:26"
    assert window.app.history.entries[-1].source.endswith("clip.wav")


def test_a_long_file_gives_a_track_list(qtbot, window, music_dir, tmp_path) -> None:
    parts = [track_audio(music_dir / n, 0.0, 16.0) for n in ("three.ogg", "album/two.mp3")]
    window.handle_drop([write_audio(tmp_path / "mix.wav", np.concatenate(parts), MIC_RATE)])
    wait_idle(qtbot, window)
    assert window.tabs.currentWidget() is window.tracklist_panel
    rows = window.tracklist_panel.model.rows()
    assert [e.track.title for e in rows] == ["Three", "Two"]
    assert "mix.wav" in window.tracklist_panel.title.text()


@pytest.mark.filterwarnings("ignore:Function.*QDragEnterEvent:DeprecationWarning")
def test_a_file_dropped_on_the_window_is_identified(qtbot, window, music_dir, tmp_path) -> None:
    clip = write_audio(
        tmp_path / "drop.wav", track_audio(music_dir / "three.ogg", 3.0, 5.0), MIC_RATE
    )
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(clip))])
    args = (QPointF(100, 100), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton)
    enter = QDragEnterEvent(QPoint(100, 100), *args[1:], Qt.KeyboardModifier.NoModifier)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    window.dropEvent(QDropEvent(*args, Qt.KeyboardModifier.NoModifier))
    wait_idle(qtbot, window)
    assert window.listen_panel.title_label.text() == "Three"


def test_an_undecodable_file_is_a_message(qtbot, window, tmp_path) -> None:
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"\0" * 100)
    window.handle_drop([bad])
    wait_idle(qtbot, window)
    assert window.banner.kind == "error" and "bad.ogg: cannot decode audio" in window.banner.text()


# ---- settings changes ----------------------------------------------------------------------------
def test_new_checkpoint_offers_a_reindex_and_keeps_the_old_index_until_done(
    qtbot, monkeypatch, window, tmp_path, music_dir
) -> None:
    other = spectral_checkpoint_file(tmp_path / "spectral-d32.pt", d=32)
    prefs = window.app.prefs
    window.apply_preferences(type(prefs)(**{**vars(prefs), "checkpoint": str(other)}))
    assert "re-indexed" in window.banner.text() and window.banner.action_button.isVisible()
    assert window.app.session.library().db.records().d == 64  # the old index still serves
    window.library_panel.update_library()  # indexing with the new checkpoint needs the rebuild
    wait_idle(qtbot, window)
    assert "does not match the checkpoint" in window.banner.text()
    assert window.banner.action_button.text() == "Re-index now"
    qtbot.mouseClick(window.banner.action_button, Qt.MouseButton.LeftButton)
    assert window.listen_panel.listen_button.isEnabled()  # a rebuild does not block listening
    wait_idle(qtbot, window)
    assert "Library rebuilt" in window.banner.text()
    assert window.app.session.library().db.records().d == 32
    assert "d = 32" in window.status_label.text()
    install_fake_mic(monkeypatch, track_audio(music_dir / "three.ogg", 2.0, 8.0), pace=0.005)
    window.listen_panel.start_listening()
    qtbot.waitUntil(lambda: window.listen_panel.state == "matched", timeout=WAIT_MS)
    assert window.listen_panel.title_label.text() == "Three"


def test_switching_back_to_the_checkpoint_of_the_library_needs_no_reindex(
    qtbot, window, spectral_path, tmp_path
) -> None:
    prefs = window.app.prefs
    copy = tmp_path / "same-weights.pt"
    copy.write_bytes(spectral_path.read_bytes())
    window.apply_preferences(type(prefs)(**{**vars(prefs), "checkpoint": str(copy)}))
    assert not window.banner.isVisible()  # the very same file content: the index still fits


def test_changing_the_data_directory_opens_that_library(qtbot, window, tmp_path) -> None:
    prefs = window.app.prefs
    window.apply_preferences(
        type(prefs)(**{**vars(prefs), "data_dir": str(tmp_path / "elsewhere")})
    )
    assert window.library_panel.tracks_model.rowCount() == 0
    assert window.app.session.db_dir == tmp_path / "elsewhere" / "library"


def test_a_new_encoder_precision_serves_the_next_search_without_closing_the_library(
    qtbot, window
) -> None:
    library = window.app.session.library()
    assert window.app.session.recognizer().fingerprinter.precision.requested == "auto"
    prefs = window.app.prefs
    window.apply_preferences(type(prefs)(**{**vars(prefs), "precision": "float32"}))
    assert window.app.session.library() is library  # nothing closed under a running worker
    assert window.app.session.recognizer().fingerprinter.precision.chosen == "float32"


def test_history_delete_and_export(qtbot, window, music_dir, tmp_path) -> None:
    clip = track_audio(music_dir / "album" / "two.mp3", 2.0, 5.0)
    for name in ("a.wav", "b.wav"):
        window.handle_drop([write_audio(tmp_path / name, clip, MIC_RATE)])
        wait_idle(qtbot, window)
    history = window.history_panel
    assert history.model.rowCount() == 2
    history.delete_rows([0])
    assert [Path(e.source).name for e in window.app.history.entries] == ["b.wav"]
    history.export(tmp_path / "out.csv", "csv")
    assert "b.wav" in (tmp_path / "out.csv").read_text()
    history.export(tmp_path / "no-such-dir" / "x" / "out.json", "json")
    assert window.banner.kind == "info"  # the export made its folder
    history.export(tmp_path / "out.csv" / "x.csv", "csv")
    assert window.banner.kind == "error" and "cannot write" in window.banner.text()


def test_keyboard_shortcuts(qtbot, window) -> None:
    shortcuts = {
        window.listen_action: "Ctrl+L",
        window.open_action: "Ctrl+O",
        window.settings_action: "Ctrl+,",
        window.quit_action: "Ctrl+Q",
    }
    for action, keys in shortcuts.items():
        assert action.shortcut().toString() == keys
    qtbot.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    assert not window.isVisible()


def test_nfp_desktop_starts_and_quits(qtbot, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    shown = []

    def close_the_window() -> None:
        shown.extend(w.windowTitle() for w in QApplication.topLevelWidgets() if w.isVisible())
        QApplication.closeAllWindows()

    QTimer.singleShot(300, close_the_window)
    assert main([]) == 0
    assert any(title.startswith("nfp — ") for title in shown)


def test_self_test_passes(capsys) -> None:
    assert main(["--self-test"]) == 0
    assert "self-test: ok" in capsys.readouterr().out


def test_a_rebuild_that_finds_nothing_keeps_the_old_index(qtbot, window, tmp_path) -> None:
    window.app.prefs.folders = [str(tmp_path / "unplugged-drive")]
    window.library_panel.rebuild()
    wait_idle(qtbot, window)
    assert "Nothing could be indexed" in window.banner.text()
    assert "previous index is unchanged" in window.banner.text()
    assert len(window.app.session.tracks()) == 3
    assert window.library_panel.tracks_model.rowCount() == 3


def test_when_the_music_stops_the_last_match_stays_greyed_with_when_it_was_heard(
    qtbot, tmp_path, spectral_path
) -> None:
    window = open_window(qtbot, tmp_path, spectral_path)
    panel = window.listen_panel
    track = Track(1, "/m/a.flac", "Anthem", "Band", "", 200.0, 0, 399)
    panel.show_live(LiveState("matched", Match(track, 42.0, 5.0, 0.9), -20.0, 3.0))
    assert panel.title_label.text() == "Anthem" and panel.match_card.isEnabled()
    panel.show_live(LiveState("listening", None, -90.0, 4.0))  # silence
    assert panel.state == "last_heard" and panel.title_label.text() == "Anthem"
    assert not panel.match_card.isEnabled()
    assert panel.status_label.text().startswith("Last heard at ")
    frozen = panel.position_label.text()
    panel.show_live(LiveState("no_match", None, -20.0, 9.0))  # other music: still the last one
    assert panel.title_label.text() == "Anthem" and panel.position_label.text() == frozen
    panel.show_live(LiveState("matched", Match(track, 80.0, 5.0, 0.9), -20.0, 12.0))
    assert panel.match_card.isEnabled() and panel.status_label.text() == "Now playing"


def test_a_track_offers_player_folder_and_copy_on_right_and_double_click(
    qtbot, window, monkeypatch
) -> None:
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    table = window.library_panel.table
    index = table.model().index(0, 0)
    track = window.library_panel.tracks_model.rows()[table.model().mapToSource(index).row()]
    menu = track_menu(table, track_ref(track))
    actions = {a.text(): a for a in menu.actions()}
    assert set(actions) == {"Open in the default player", "Show in folder", "Copy title and artist"}
    actions["Show in folder"].trigger()
    actions["Copy title and artist"].trigger()
    assert opened[-1].toLocalFile() == str(Path(track.path).parent)
    assert QGuiApplication.clipboard().text().startswith(track.title)
    table.doubleClicked.emit(index)
    assert opened[-1].toLocalFile() == track.path
    assert table.contextMenuPolicy() == Qt.ContextMenuPolicy.CustomContextMenu
    assert (
        window.listen_panel.match_card.contextMenuPolicy() == Qt.ContextMenuPolicy.CustomContextMenu
    )


def test_a_closed_window_is_freed_without_the_cycle_collector(qtbot, tmp_path) -> None:
    """A reference cycle through the window lets Python's collector delete it later, on
    whichever thread runs then: on a worker thread that crashed the app (a segfault in CI)."""
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("storage/data_dir", str(tmp_path))
    gc.disable()
    try:
        window = MainWindow(AppContext.from_settings(settings))
        window.show()
        window.close()
        freed = weakref.ref(window)
        del window
        assert freed() is None
    finally:
        gc.enable()


def test_every_control_has_an_accessible_name_and_tab_leaves_tables(qtbot, window) -> None:
    """Screen readers announce each control by name; Qt's own parts (headers, the table corner,
    the line edit's clear button) are left out."""
    kinds = (QAbstractButton, QComboBox, QLineEdit, QAbstractItemView, QProgressBar)
    internal = (QHeaderView,)
    unnamed = []
    for widget in window.findChildren(QWidget):
        ours = type(widget).__module__.startswith("nfp_desktop")
        if isinstance(widget, internal) or widget.objectName().startswith("qt_"):
            continue
        if isinstance(widget.parent(), QLineEdit) or not (ours or isinstance(widget, kinds)):
            continue
        text = widget.text() if isinstance(widget, QAbstractButton) else ""
        if not (widget.accessibleName() or text):
            unnamed.append(f"{type(widget).__name__} in {type(widget.parent()).__name__}")
    assert not unnamed
    assert not window.library_panel.table.tabKeyNavigation()
    window.listen_panel.level_meter.set_level_db(-20.0)
    assert window.listen_panel.level_meter.accessibleDescription() == "-20 dB"


def test_a_report_leaves_by_itself_and_an_error_stays(qtbot, window, monkeypatch) -> None:
    monkeypatch.setattr("nfp_desktop.widgets.INFO_SHOWN_MS", 50)
    window.banner.show_message("info", "3 indexed, 0 skipped")
    qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=2000)
    window.banner.show_message("error", "a device vanished")
    qtbot.wait(150)
    assert window.banner.isVisible() and not window.banner.stale_timer.isActive()


def _contrast(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio of two colours."""

    def luminance(c: QColor) -> float:
        channels = [x / 255 for x in (c.red(), c.green(), c.blue())]
        lin = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("window_colour", ["#efefef", "#2b2b2b"])
def test_secondary_text_is_readable_in_a_light_and_a_dark_palette(window_colour: str) -> None:
    palette = QPalette()
    back = QColor(window_colour)
    palette.setColor(QPalette.ColorRole.Window, back)
    text = QColor("#000000") if back.lightness() >= 128 else QColor("#f0f0f0")
    palette.setColor(QPalette.ColorRole.WindowText, text)
    style = styled(palette)
    dim = QColor(style.split("QLabel#status { color: ")[1].split(";")[0])
    note = QColor(style.split("QLabel#note { color: ")[1].split(";")[0])
    assert _contrast(dim, back) >= 4.5 and _contrast(note, back) >= 4.5


def test_every_note_of_indexing_reaches_the_window(qtbot, tmp_path, music, spectral_path) -> None:
    """What `nfp index` prints below its summary the banner says too: here that an emptied
    folder (an unmounted disk?) kept its tracks."""
    index_library(tmp_path / "data" / "library", music, spectral_path)
    window = open_window(qtbot, tmp_path, spectral_path, folders=[music.resolve()])
    shutil.rmtree(music)
    music.mkdir()
    window.library_panel.update_library()
    wait_idle(qtbot, window)
    assert "Library updated: 0 indexed, 0 unchanged." in window.banner.text()
    assert f"{music.resolve()} is empty (an unmounted disk?): kept its 3 tracks." in (
        window.banner.text()
    )
    assert window.library_panel.tracks_model.rowCount() == 3
