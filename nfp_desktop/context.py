"""What the window's parts share: the settings, the preferences, the open library, the history."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QSettings

from nfp_desktop.history import HistoryStore
from nfp_desktop.preferences import Preferences, load_preferences, save_preferences
from nfp_desktop.session import LibrarySession


@dataclass
class AppContext:
    settings: QSettings
    prefs: Preferences
    session: LibrarySession
    history: HistoryStore

    @classmethod
    def from_settings(cls, settings: QSettings) -> AppContext:
        prefs = load_preferences(settings)
        return cls(
            settings,
            prefs,
            LibrarySession(prefs.db_dir, prefs.precision),
            HistoryStore(prefs.data_dir),
        )

    def save(self) -> None:
        save_preferences(self.settings, self.prefs)
