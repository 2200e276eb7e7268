"""Every identification the user made, kept as JSON under the data directory, exportable."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

from engine.api import Match, TracklistEntry

HISTORY_FILE = "history.json"
MICROPHONE = "microphone"  # the `source` of a live identification; files store their path


@dataclass(frozen=True)
class HistoryEntry:
    when: str  # ISO 8601, local time with offset
    title: str
    artist: str
    album: str
    path: str  # the library track
    offset_s: float  # position in the track when identified
    confidence: float
    source: str  # MICROPHONE or the identified file

    @classmethod
    def from_match(cls, match: Match, source: str, when: datetime | None = None) -> HistoryEntry:
        track = match.track
        return cls(
            when=(when or datetime.now().astimezone()).isoformat(timespec="seconds"),
            title=track.title,
            artist=track.artist,
            album=track.album,
            path=track.path,
            offset_s=round(match.offset_s, 2),
            confidence=round(match.confidence, 3),
            source=source,
        )

    @classmethod
    def from_tracklist(cls, entry: TracklistEntry, source: str) -> HistoryEntry:
        match = Match(entry.track, entry.offset_s, 0.0, entry.confidence)
        return cls.from_match(match, f"{source} @ {entry.start_s:.0f} s")


COLUMNS = [f.name for f in fields(HistoryEntry)]


class HistoryStore:
    """The history file: load once, save after each change (atomically: temp file, then rename)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / HISTORY_FILE
        self.entries: list[HistoryEntry] = self._load()

    def _load(self) -> list[HistoryEntry]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return [HistoryEntry(**{k: item[k] for k in COLUMNS}) for item in raw]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, KeyError):
            # A damaged history must not stop the app; keep it aside instead of overwriting it.
            self.path.replace(self.path.with_suffix(".damaged.json"))
            return []

    def add(self, entry: HistoryEntry) -> None:
        self.entries.append(entry)
        self.save()

    def remove(self, rows: list[int]) -> None:
        doomed = set(rows)
        self.entries = [e for i, e in enumerate(self.entries) if i not in doomed]
        self.save()

    def save(self) -> None:
        _write_atomically(self.path, json.dumps([asdict(e) for e in self.entries], indent=1))

    def export_json(self, path: Path) -> None:
        _write_atomically(Path(path), json.dumps([asdict(e) for e in self.entries], indent=1))

    def export_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(asdict(e) for e in self.entries)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
