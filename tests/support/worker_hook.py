"""Installed as `sitecustomize` into the Dask worker processes of tests/test_cluster.py (and the
ones their nanny restarts): a worker fingerprinting the file named in the control file
$NFP_TEST_KILL_CONTROL ({"name": ..., "times": N}) kills itself with SIGKILL, mid-file, at most
N times in all (each kill leaves a mark beside the control file). No control file: no kills."""

import json
import os
import signal
from pathlib import Path


def _install(control: Path) -> None:
    import engine.library.parallel

    real = engine.library.parallel.fingerprint_file

    def fingerprint_file(path, fingerprinter, stored_digests):
        result = real(path, fingerprinter, stored_digests)  # the work done, never returned
        if control.is_file():
            wanted = json.loads(control.read_text())
            marks = control.with_suffix(".kills")
            if path.name == wanted["name"] and len(list(marks.glob("*"))) < wanted["times"]:
                marks.mkdir(exist_ok=True)
                (marks / str(os.getpid())).touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    engine.library.parallel.fingerprint_file = fingerprint_file


if os.environ.get("NFP_TEST_KILL_CONTROL"):
    _install(Path(os.environ["NFP_TEST_KILL_CONTROL"]))
