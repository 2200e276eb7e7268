"""Thin table models: a list of rows and a column spec each; testable without a window.

Each column has a header, the text shown, and a sort key (returned for SORT_ROLE) so that the
proxy sorts durations and times as numbers, not as strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)

from engine.api import Track, TracklistEntry
from nfp_desktop.formatting import format_time
from nfp_desktop.history import HistoryEntry

SORT_ROLE = Qt.ItemDataRole.UserRole
Row = TypeVar("Row")
AnyIndex = QModelIndex | QPersistentModelIndex


@dataclass(frozen=True)
class Column(Generic[Row]):
    header: str
    text: Callable[[Row], str]
    sort_key: Callable[[Row], Any] | None = None  # defaults to the text, case-folded


class RowTableModel(QAbstractTableModel, Generic[Row]):
    """Rows of one type shown through a fixed list of columns."""

    COLUMNS: Sequence[Column] = ()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[Row] = []

    def set_rows(self, rows: Sequence[Row]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def rows(self) -> list[Row]:
        return list(self._rows)

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        column = self.COLUMNS[index.column()]
        row = self._rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return column.text(row)
        if role == SORT_ROLE:
            return column.sort_key(row) if column.sort_key else column.text(row).casefold()
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section].header
        return None


class TrackTableModel(RowTableModel[Track]):
    TITLE, ARTIST, ALBUM, DURATION, PATH = range(5)
    COLUMNS = (
        Column("Title", lambda t: t.title),
        Column("Artist", lambda t: t.artist),
        Column("Album", lambda t: t.album),
        Column("Duration", lambda t: format_time(t.duration_s), lambda t: t.duration_s),
        Column("Path", lambda t: t.path),
    )


class SkippedModel(RowTableModel[tuple[str, str]]):
    COLUMNS = (
        Column("File", lambda s: Path(s[0]).name or s[0]),
        Column("Reason", lambda s: s[1]),
        Column("Path", lambda s: s[0]),
    )


class HistoryModel(RowTableModel[HistoryEntry]):
    COLUMNS = (
        Column("Time", lambda e: e.when.replace("T", " ")[:19], lambda e: e.when),
        Column("Title", lambda e: e.title),
        Column("Artist", lambda e: e.artist),
        Column("Offset", lambda e: format_time(e.offset_s), lambda e: e.offset_s),
        Column("Confidence", lambda e: f"{e.confidence:.0%}", lambda e: e.confidence),
        Column("Source", lambda e: e.source),
    )


class TracklistModel(RowTableModel[TracklistEntry]):
    COLUMNS = (
        Column(
            "Time in recording",
            lambda e: f"{format_time(e.start_s)} – {format_time(e.end_s)}",
            lambda e: e.start_s,
        ),
        Column("Title", lambda e: e.track.title),
        Column("Artist", lambda e: e.track.artist),
        Column("From", lambda e: format_time(e.offset_s), lambda e: e.offset_s),
        Column("Confidence", lambda e: f"{e.confidence:.0%}", lambda e: e.confidence),
    )


def sortable_filter_proxy(
    model: RowTableModel, parent: QObject | None = None
) -> QSortFilterProxyModel:
    """A proxy that sorts by each column's sort key and filters on any column, ignoring case."""
    proxy = QSortFilterProxyModel(parent)
    proxy.setSourceModel(model)
    proxy.setSortRole(SORT_ROLE)
    proxy.setFilterKeyColumn(-1)
    proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
    return proxy
