"""`nfp-desktop`: start the app."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from engine.api import apply_thread_policy


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    apply_thread_policy()  # before any worker encodes or searches
    if args.self_test:
        from nfp_desktop.selftest import run_self_test

        return run_self_test()
    return _run_app(args)


def _run_app(args: argparse.Namespace) -> int:
    # Qt is imported here, not at the top: once PySide6 is loaded it checks the source of every
    # module imported after it (its __feature__ hook), 80 ms of the self-test's imports here, so
    # the self-test loads the engine first and Qt last.
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from nfp_desktop.context import AppContext
    from nfp_desktop.main_window import MainWindow
    from nfp_desktop.preferences import APPLICATION, ORGANIZATION
    from nfp_desktop.widgets import app_icon

    qt_app = QApplication.instance() or QApplication([sys.argv[0], *args.qt_args])
    qt_app.setOrganizationName(ORGANIZATION)
    qt_app.setApplicationName(APPLICATION)
    qt_app.setDesktopFileName("nfp-desktop")  # Wayland matches the window to the .desktop entry
    qt_app.setWindowIcon(app_icon())
    window = MainWindow(AppContext.from_settings(QSettings(ORGANIZATION, APPLICATION)))
    window.show()
    return qt_app.exec()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nfp-desktop", description="Identify music from your library."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument(
        "--self-test", action="store_true", help="check the installation headless and exit"
    )
    parser.add_argument("qt_args", nargs="*", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
