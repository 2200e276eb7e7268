"""What the user chose, persisted with QSettings: checkpoint, input device, data directory, folders.

Also the choices the settings dialog offers: the shipped checkpoints (and their dimensions, read
from the files without building the models) and the input devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from platformdirs import user_data_dir
from PySide6.QtCore import QSettings

from engine.api import (
    PRECISIONS,
    CheckpointError,
    InputDevice,
    NoInputDeviceError,
    default_checkpoint_path,
    read_config,
    shipped_checkpoints,
)

ORGANIZATION = "nfp"
APPLICATION = "nfp-desktop"


def default_data_dir() -> Path:
    """The per-user data directory; its `library` folder is the `nfp` command's default --db."""
    return Path(user_data_dir("nfp", appauthor=False))


@dataclass
class Preferences:
    checkpoint: str = ""  # a checkpoint file; "" means the shipped default
    device: str = ""  # an input device name; "" means the system default
    data_dir: str = field(default_factory=lambda: str(default_data_dir()))
    folders: list[str] = field(default_factory=list)  # music folders in the library
    continuous: bool = True  # keep listening after a match
    precision: str = "auto"  # the encoder's numeric path: auto (probed), float32, bfloat16, int8
    close_to_tray: bool = False  # closing the window while listening keeps listening in the tray
    notify: bool = True  # a desktop notification for each new match

    def checkpoint_path(self) -> Path:
        """The checkpoint to index with. Raises CheckpointError when the default is missing."""
        return Path(self.checkpoint) if self.checkpoint else default_checkpoint_path()

    @property
    def db_dir(self) -> Path:
        return Path(self.data_dir) / "library"


def load_preferences(settings: QSettings) -> Preferences:
    defaults = Preferences()
    folders = settings.value("library/folders", [])
    return Preferences(
        checkpoint=str(settings.value("engine/checkpoint", defaults.checkpoint)),
        device=str(settings.value("input/device", defaults.device)),
        data_dir=str(settings.value("storage/data_dir", defaults.data_dir)),
        # QSettings returns a bare string for a one-item list and None for an empty one.
        folders=[folders] if isinstance(folders, str) else list(folders or []),
        continuous=_as_bool(settings.value("listen/continuous", defaults.continuous)),
        precision=_as_precision(settings.value("engine/precision", defaults.precision)),
        close_to_tray=_as_bool(settings.value("window/close_to_tray", defaults.close_to_tray)),
        notify=_as_bool(settings.value("window/notify", defaults.notify)),
    )


def save_preferences(settings: QSettings, prefs: Preferences) -> None:
    settings.setValue("engine/checkpoint", prefs.checkpoint)
    settings.setValue("input/device", prefs.device)
    settings.setValue("storage/data_dir", prefs.data_dir)
    settings.setValue("library/folders", list(prefs.folders))
    settings.setValue("listen/continuous", prefs.continuous)
    settings.setValue("engine/precision", prefs.precision)
    settings.setValue("window/close_to_tray", prefs.close_to_tray)
    settings.setValue("window/notify", prefs.notify)
    settings.sync()


def _as_precision(value: object) -> str:
    """A saved precision, or auto for anything this version does not know."""
    return str(value) if str(value) in PRECISIONS else "auto"


def _as_bool(value: object) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")


# ---- checkpoints ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointChoice:
    path: Path
    encoder: str
    d: int

    @property
    def label(self) -> str:
        return f"{self.path.stem}  ({self.encoder}, d = {self.d})"


def describe_checkpoint(path: Path) -> CheckpointChoice:
    """Encoder name and d of a checkpoint file, read without building its model."""
    stat = Path(path).stat() if Path(path).is_file() else None
    if stat is None:
        raise CheckpointError(path, "file not found")
    return _describe(Path(path).resolve(), stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _describe(path: Path, mtime_ns: int) -> CheckpointChoice:
    config = read_config(path)
    return CheckpointChoice(path, config.name, config.d)


def shipped_choices() -> list[CheckpointChoice]:
    """The shipped checkpoints that can be read, the default first."""
    choices = []
    for path in shipped_checkpoints():
        try:
            choices.append(describe_checkpoint(path))
        except CheckpointError:
            continue  # a damaged shipped file is reported when used, not when listed
    return choices


# ---- input devices --------------------------------------------------------------------------
def pick_device(saved: str, devices: list[InputDevice]) -> tuple[InputDevice, str]:
    """The saved device if it still exists, else the default with a notice saying so."""
    if not devices:
        raise NoInputDeviceError("this computer has no audio input device")
    default = next((d for d in devices if d.is_default), devices[0])
    if not saved:
        return default, ""
    for device in devices:
        if device.name == saved:
            return device, ""
    return default, f"The input device “{saved}” is not available; using “{default.name}” instead."
