"""The desktop app's thin models and pure helpers, without a window."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import csv
import json

import pytest
from PySide6.QtCore import Qt

from engine.core.errors import NoInputDeviceError
from engine.core.mic import InputDevice
from engine.library.tracks import Track
from engine.query.recognize import TracklistEntry
from engine.query.search import Match
from nfp_desktop.formatting import (
    estimate_eta_s,
    format_eta,
    format_position,
    format_time,
    plural,
)
from nfp_desktop.history import HistoryEntry, HistoryStore
from nfp_desktop.models import (
    SORT_ROLE,
    HistoryModel,
    SkippedModel,
    TracklistModel,
    TrackTableModel,
    sortable_filter_proxy,
)
from nfp_desktop.position import PositionClock
from nfp_desktop.preferences import pick_device

pytestmark = pytest.mark.gui

TRACKS = [
    Track(1, "/m/b.flac", "Battle", "Band A", "Album X", 245.0, 0, 489),
    Track(2, "/m/a.ogg", "anthem", "Band B", "Album Y", 61.5, 489, 122),
    Track(3, "/m/c.mp3", "Calm", "Band A", "", 1200.0, 611, 2399),
]


def _column(model, column: int, role=Qt.ItemDataRole.DisplayRole) -> list:
    return [model.data(model.index(r, column), role) for r in range(model.rowCount())]


def test_track_model_shows_tags_and_formatted_durations() -> None:
    model = TrackTableModel()
    model.set_rows(TRACKS)
    assert model.rowCount() == 3 and model.columnCount() == 5
    assert _column(model, TrackTableModel.TITLE) == ["Battle", "anthem", "Calm"]
    assert _column(model, TrackTableModel.DURATION) == ["4:05", "1:02", "20:00"]
    assert _column(model, TrackTableModel.DURATION, SORT_ROLE) == [245.0, 61.5, 1200.0]
    assert model.headerData(0, Qt.Orientation.Horizontal) == "Title"
    assert model.data(model.index(5, 0)) is None  # out of range is invalid, not an error


def test_proxy_sorts_numbers_as_numbers_and_titles_ignoring_case() -> None:
    model = TrackTableModel()
    model.set_rows(TRACKS)
    proxy = sortable_filter_proxy(model)
    proxy.sort(TrackTableModel.DURATION, Qt.SortOrder.DescendingOrder)
    assert _column(proxy, TrackTableModel.TITLE) == ["Calm", "Battle", "anthem"]
    proxy.sort(TrackTableModel.TITLE, Qt.SortOrder.AscendingOrder)
    assert _column(proxy, TrackTableModel.TITLE) == ["anthem", "Battle", "Calm"]


def test_proxy_filters_on_any_column() -> None:
    model = TrackTableModel()
    model.set_rows(TRACKS)
    proxy = sortable_filter_proxy(model)
    proxy.setFilterFixedString("band a")
    assert sorted(_column(proxy, TrackTableModel.TITLE)) == ["Battle", "Calm"]
    proxy.setFilterFixedString("album y")
    assert _column(proxy, TrackTableModel.TITLE) == ["anthem"]


def test_skipped_history_and_tracklist_models() -> None:
    skipped = SkippedModel()
    skipped.set_rows([("/m/bad.mp3", "cannot decode audio (Invalid data)")])
    assert _column(skipped, 0) == ["bad.mp3"] and "Invalid data" in _column(skipped, 1)[0]
    history = HistoryModel()
    history.set_rows([HistoryEntry.from_match(Match(TRACKS[0], 151.2, 9.0, 0.87), "microphone")])
    assert _column(history, 1) == ["Battle"] and _column(history, 3) == ["2:31"]
    assert _column(history, 4) == ["87%"]
    tracklist = TracklistModel()
    tracklist.set_rows([TracklistEntry(62.0, 180.0, TRACKS[2], 30.0, 0.9)])
    assert _column(tracklist, 0) == ["1:02 – 3:00"] and _column(tracklist, 3) == ["0:30"]


def test_time_formats() -> None:
    assert format_time(0) == "0:00" and format_time(151.9) == "2:32" and format_time(-3) == "0:00"
    assert format_time(119.6) == "2:00"  # rounded, not cut: a clip from 2:00 reads 2:00
    assert format_position(151.0, 245.0) == "2:31 / 4:05"
    assert plural(1, "track") == "1 track" and plural(2, "track") == "2 tracks"
    assert format_position(300.0, 245.0) == "4:05 / 4:05"
    assert estimate_eta_s(10.0, 0, 5) is None
    assert estimate_eta_s(10.0, 2, 6) == pytest.approx(20.0)
    assert format_eta(None) == "estimating time left…"
    assert format_eta(20.0) == "about 20 s left" and format_eta(600.0) == "about 10 min left"
    assert format_eta(3 * 3600 + 60) == "about 3 h 01 min left"


def test_position_clock_ticks_between_updates_and_relocks_on_jumps() -> None:
    clock = PositionClock()
    clock.lock(offset_s=30.0, duration_s=100.0, now_s=5.0)
    assert clock.running and clock.position(7.5) == pytest.approx(32.5)
    clock.lock(80.0, 100.0, now_s=8.0)  # the music jumped
    assert clock.position(8.5) == pytest.approx(80.5)
    assert clock.position(30.0) == 100.0  # never past the end
    clock.freeze(9.0)
    assert not clock.running and clock.position(50.0) == pytest.approx(81.0)
    clock.hold(12.0, 100.0)
    assert not clock.running and clock.position(99.0) == 12.0


def test_history_round_trip_delete_and_exports(tmp_path) -> None:
    store = HistoryStore(tmp_path)
    for i, track in enumerate(TRACKS):
        store.add(HistoryEntry.from_match(Match(track, 10.0 * i, 5.0, 0.8), "microphone"))
    store.remove([1])
    reloaded = HistoryStore(tmp_path)
    assert [e.title for e in reloaded.entries] == ["Battle", "Calm"]
    reloaded.export_csv(tmp_path / "h.csv")
    rows = list(csv.DictReader((tmp_path / "h.csv").open(encoding="utf-8")))
    assert [r["title"] for r in rows] == ["Battle", "Calm"] and rows[1]["offset_s"] == "20.0"
    reloaded.export_json(tmp_path / "h.json")
    exported = json.loads((tmp_path / "h.json").read_text())
    assert exported[0]["path"] == "/m/b.flac" and exported[0]["source"] == "microphone"


def test_damaged_history_is_set_aside_not_fatal(tmp_path) -> None:
    (tmp_path / "history.json").write_text("{not json")
    assert HistoryStore(tmp_path).entries == []
    assert (tmp_path / "history.damaged.json").exists()


def test_pick_device_falls_back_to_the_default_with_a_notice() -> None:
    devices = [
        InputDevice(0, "USB headset", 1, 48000.0, False),
        InputDevice(1, "Built-in microphone", 2, 44100.0, True),
    ]
    assert pick_device("USB headset", devices) == (devices[0], "")
    assert pick_device("", devices) == (devices[1], "")
    device, notice = pick_device("Gone mic", devices)
    assert device == devices[1] and "Gone mic" in notice and "Built-in microphone" in notice
    with pytest.raises(NoInputDeviceError, match="no audio input device"):
        pick_device("", [])
