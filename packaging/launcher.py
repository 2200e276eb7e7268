"""Entry point of the frozen app. `nfp-desktop` starts the app; the same binary started through
the `nfp` link beside it is the command line (one executable keeps the bundle's Python once)."""

import sys
from pathlib import Path


def main() -> int:
    if Path(sys.argv[0]).name == "nfp":
        from engine.cli import main as command_line

        return command_line()
    from nfp_desktop.app import main as desktop

    return desktop()


if __name__ == "__main__":
    sys.exit(main())
