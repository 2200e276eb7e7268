"""nfp-desktop: the PySide6 app on top of the engine (index a library, listen, identify files)."""
