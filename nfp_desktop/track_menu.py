"""What a right-click or a double-click on a track or a match offers: open it in the desktop's
player, show it in its folder, copy its title and artist."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QModelIndex, QPoint, QSortFilterProxyModel, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QAbstractItemView, QMenu, QWidget

from nfp_desktop.models import RowTableModel


@dataclass(frozen=True)
class TrackRef:
    path: str
    title: str
    artist: str

    @property
    def display(self) -> str:
        return f"{self.title} — {self.artist}" if self.artist else self.title


def track_ref(track) -> TrackRef:
    """A library Track (engine.library.tracks) or a HistoryEntry: both have path, title and
    artist."""
    return TrackRef(track.path, track.title, track.artist)


def open_in_player(ref: TrackRef) -> bool:
    """The desktop's default player for the file (it starts at the beginning: players take no
    position through a file URL)."""
    return QDesktopServices.openUrl(QUrl.fromLocalFile(ref.path))


def show_in_folder(ref: TrackRef) -> bool:
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(ref.path).parent)))


def copy_title(ref: TrackRef) -> None:
    QGuiApplication.clipboard().setText(ref.display)


def track_menu(parent: QWidget, ref: TrackRef) -> QMenu:
    menu = QMenu(parent)
    menu.addAction("Open in the default player", lambda: open_in_player(ref))
    menu.addAction("Show in folder", lambda: show_in_folder(ref))
    menu.addAction("Copy title and artist", lambda: copy_title(ref))
    return menu


def attach_track_menu(
    view: QAbstractItemView, model: RowTableModel, to_ref: Callable[[object], TrackRef]
) -> None:
    """Right-click on a row of `view` (over `model`, perhaps through a sort proxy) opens
    track_menu for it; a double-click opens it in the player."""

    def ref_at(index: QModelIndex) -> TrackRef | None:
        if not index.isValid():
            return None
        proxy = view.model()
        if isinstance(proxy, QSortFilterProxyModel):
            index = proxy.mapToSource(index)
        return to_ref(model.rows()[index.row()])

    def context_menu(point: QPoint) -> None:
        ref = ref_at(view.indexAt(point))
        if ref is not None:
            track_menu(view, ref).popup(view.viewport().mapToGlobal(point))

    view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    view.customContextMenuRequested.connect(context_menu)
    view.doubleClicked.connect(lambda index: (ref := ref_at(index)) and open_in_player(ref))
