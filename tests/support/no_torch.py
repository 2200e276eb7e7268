"""Installed as sitecustomize.py on a child's PYTHONPATH: makes torch unimportable there, to prove
that a command runs without it (as in an install without the `train` extra)."""

import sys


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (made unimportable)", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
