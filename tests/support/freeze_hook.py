"""Installed as `sitecustomize` into an `nfp` subprocess by tests/test_reliability.py: at a named
moment of indexing, the process tells the test (by creating a flag file) and then waits forever,
so the test's kill -9 lands exactly there instead of wherever a timer happens to be."""

import os
import time


def _freeze() -> None:
    open(os.environ["NFP_TEST_FREEZE_FLAG"], "w").close()
    while True:
        time.sleep(60)


def _freeze_on_call(owner: type, name: str, *, after_return: bool) -> None:
    """Freeze at the Nth call of owner.name (N = $NFP_TEST_FREEZE_AFTER), before or after it."""
    real = getattr(owner, name)
    wanted = int(os.environ["NFP_TEST_FREEZE_AFTER"])
    calls = []

    def hooked(*args, **kwargs):
        calls.append(1)
        if len(calls) == wanted and not after_return:
            _freeze()
        result = real(*args, **kwargs)
        if len(calls) == wanted and after_return:
            _freeze()
        return result

    setattr(owner, name, hooked)


def install(moment: str) -> None:
    from engine.library.library import Library
    from engine.library.store import VectorStore
    from engine.library.tracks import TrackDB

    if moment == "rows appended":  # fsynced rows, the track not committed
        _freeze_on_call(VectorStore, "append_raw", after_return=True)
    elif moment == "mid-commit":  # inside the transaction that commits a track
        _freeze_on_call(TrackDB, "add", after_return=True)
    elif moment == "track committed":
        _freeze_on_call(Library, "add_track", after_return=True)
    else:
        raise ValueError(moment)


if os.environ.get("NFP_TEST_FREEZE_AT"):
    install(os.environ["NFP_TEST_FREEZE_AT"])
