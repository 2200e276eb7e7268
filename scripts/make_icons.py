"""Render nfp_desktop/icons/nfp.svg to the PNG sizes desktop menus use (icons/nfp-N.png).

Usage: QT_QPA_PLATFORM=offscreen python scripts/make_icons.py   (run again after editing the SVG)
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parents[1] / "nfp_desktop" / "icons"
SIZES = (16, 32, 48, 64, 128, 256)


def main() -> None:
    app = QGuiApplication([])  # QPainter needs one
    renderer = QSvgRenderer(str(ICONS / "nfp.svg"))
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        renderer.render(painter)
        painter.end()
        image.save(str(ICONS / f"nfp-{size}.png"))
    del app


if __name__ == "__main__":
    main()
