"""Reading a music folder: which audio files are in it, their tags and content hashes.

Only regular files are candidates (after following links): a FIFO or a device named *.mp3 would
block the indexer forever. A folder that cannot be read is reported, so the library keeps the
tracks it knew there instead of taking them for deleted (docs/architecture.md, Folders that
vanish; docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tinytag import TinyTag

from engine.core.audio import AUDIO_EXTENSIONS, file_kind

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ScannedFile:
    path: Path
    size: int
    mtime_ns: int


@dataclass
class FolderScan:
    """What a walk of one folder found: audio files, files passed over with a reason, and the
    folders that could not be read (their tracks must not be taken for removed)."""

    folder: Path
    files: list[ScannedFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    unreadable: list[Path] = field(default_factory=list)
    n_entries: int = 0  # everything seen, audio or not: 0 means an empty (unmounted?) folder

    def was_read(self, path: str) -> bool:
        """Whether the folder holding `path` was read, so a track missing there is gone."""
        p = Path(path)
        return p.is_relative_to(self.folder) and not any(
            p.is_relative_to(u) for u in self.unreadable
        )


def scan_folder(folder: Path) -> FolderScan:
    """Audio files under folder, recursively, in a stable order (sorted per directory)."""
    scan = FolderScan(folder)

    def unreadable(e: OSError) -> None:
        scan.unreadable.append(Path(e.filename))
        scan.skipped.append((os.fsdecode(e.filename), f"folder unreadable ({e.strerror or e})"))

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=False):
        dirs.sort()
        scan.n_entries += len(dirs) + len(files)
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix.lower() in AUDIO_EXTENSIONS:
                _add_file(scan, path)
    return scan


def _add_file(scan: FolderScan, path: Path) -> None:
    try:
        st = path.stat()  # follows a link: what matters is what it points to
    except OSError as e:
        scan.skipped.append((str(path), f"cannot read ({e.strerror or e})"))
        return
    if not stat.S_ISREG(st.st_mode):
        scan.skipped.append((str(path), f"not a regular file ({file_kind(st.st_mode)})"))
        return
    scan.files.append(ScannedFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns))


def read_tags(path: Path, duration_s: float) -> dict:
    """Title, artist, album, duration; the file name stands in for a missing title."""
    tags = {"title": display_path(path.stem), "artist": "", "album": "", "duration_s": duration_s}
    try:
        tag = TinyTag.get(str(path))
    except Exception as e:  # tinytag raises its own and OS errors; tags are optional either way
        log.info("%s: no tags (%s)", path, e)
        return tags
    tags.update(
        {
            k: v.strip()
            for k in ("title", "artist", "album")
            if isinstance(v := getattr(tag, k, None), str) and v.strip()
        }
    )
    return tags


def content_hash(path: Path) -> str:
    """A digest of the file's bytes: how a moved or renamed file is recognised."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def display_path(path: str | Path) -> str:
    """A path as text that can always be printed: bytes that are not UTF-8 (old Latin-1 file
    names) shown as replacement characters. Only for showing; the library keeps the real path."""
    return os.fsencode(path).decode("utf-8", "replace")


def printable(text: object) -> str:
    """Text from tags, file names or messages, safe for a terminal: control and format
    characters (escape sequences that recolour, retitle or clear it, a newline that splits one
    error line in two, bidirectional overrides) are shown as \\x1b-style escapes; bytes that are
    not UTF-8 as replacement characters. Every line nfp prints goes through here."""
    text = str(text)
    with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate from a tag: escaped below
        text = display_path(text)
    return "".join(ch if not unicodedata.category(ch).startswith("C") else _escape(ch)
                   for ch in text)  # fmt: skip


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
