"""Every library Qt's platform plugins load is installed (scripts/setup.sh installs
packaging/qt-runtime-packages.txt): an offscreen test cannot see that xcb could not load."""

import subprocess
from pathlib import Path

import pytest

PySide6 = pytest.importorskip("PySide6")

PLUGINS = Path(PySide6.__file__).parent / "Qt" / "plugins"
# Loaded only where their library is: GTK's theme on a GNOME desktop (which brings GTK), PDF
# images with QtPdf (not in PySide6-Essentials). The bundle leaves both out.
OPTIONAL = {"libqgtk3.so", "libqpdf.so"}


@pytest.mark.parametrize(
    "folder", ["platforms", "xcbglintegrations", "wayland-shell-integration", "platformthemes",
               "imageformats", "iconengines"],
)  # fmt: skip
def test_qt_plugins_find_every_library_they_need(folder: str):
    missing = []
    for plugin in sorted((PLUGINS / folder).glob("*.so")):
        if plugin.name in OPTIONAL:
            continue
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True).stdout
        missing += [f"{plugin.name}: {line.strip()}" for line in out.splitlines()
                    if "not found" in line]  # fmt: skip
    assert not missing, "\n".join(missing)
