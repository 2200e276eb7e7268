"""The `nfp-desktop` console script: starts the app, or says in one line why it cannot.

Kept free of Qt imports, so that an install without the `gui` extra gets the command that
installs it instead of a traceback from `import PySide6`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine.api import NfpError, printable
from nfp_desktop.app import main as run_app


def main(argv: Sequence[str] | None = None) -> int:
    # The app imports Qt only once it starts (after the engine, for a faster start), so a
    # missing Qt shows up while it runs, not when its module is imported.
    try:
        return run_app(argv)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("PySide6"):
            raise
        print(f"nfp-desktop: error: the desktop app needs Qt: pip install 'nfp[gui]' ({e})",
              file=sys.stderr)  # fmt: skip
        return 1
    except NfpError as e:  # a setting read at start-up (NFP_THREADS, NFP_BACKEND…)
        print(f"nfp-desktop: error: {printable(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
