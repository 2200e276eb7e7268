"""The app as a user gets it: bundle size, self-test time, launch to window and quit.

Times the built bundle (`bash scripts/build_app.sh`) and, with --source, `python -m
nfp_desktop.app` from this environment. Launch and quit run under Xvfb with a window manager
(openbox) and Qt's real xcb plugin: launch is process start until the main window is mapped
(xdotool sees it), quit is the window manager's close request (Alt+F4) until the process exits.
Each run starts with fresh settings and an empty library.
Usage: python bench/bench_app.py [--bundle dist/nfp-desktop] [--source] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from common import report

ROOT = Path(__file__).resolve().parents[1]
TITLE = "^nfp — identify music"  # the main window's title (nfp_desktop.main_window)
DISPLAY = ":93"


def size_mb(path: Path) -> float:
    files = [f for f in path.rglob("*") if f.is_file() and not f.is_symlink()]
    return round(sum(f.stat().st_size for f in files) / 1e6, 1)


@contextmanager
def x_server():
    """Xvfb and openbox on DISPLAY, for the length of the block."""
    xvfb = subprocess.Popen(["Xvfb", DISPLAY, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    wm = subprocess.Popen(["openbox"], env={**os.environ, "DISPLAY": DISPLAY},
                          stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    try:
        yield
    finally:
        wm.terminate()
        xvfb.terminate()


def fresh_env(home: Path, display: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NFP_", "QT_"))}
    for key, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "share"),
                     ("XDG_CACHE_HOME", "cache")):  # fmt: skip
        env[key] = str(home / sub)
    env["HOME"] = str(home)
    if display:
        env |= {"DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    else:
        env["QT_QPA_PLATFORM"] = "offscreen"
    return env


def self_test_s(command: list[str]) -> float:
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        done = subprocess.run([*command, "--self-test"], env=fresh_env(Path(home), None),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"self-test failed: {done.stderr}")
    return elapsed


def window_id(env: dict[str, str]) -> str | None:
    out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", TITLE], env=env,
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    return out[0] if out else None


def launch_and_quit_s(command: list[str]) -> tuple[float, float]:
    """Seconds from start to a mapped main window, and from Alt+F4 to the process's exit."""
    with tempfile.TemporaryDirectory() as home:
        env = fresh_env(Path(home), DISPLAY)
        started = time.perf_counter()
        app = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
        while (wid := window_id(env)) is None:
            if app.poll() is not None or time.perf_counter() - started > 60:
                raise SystemExit(f"{command}: no window (exit status {app.poll()})")
            time.sleep(0.01)
        launch = time.perf_counter() - started
        time.sleep(1.0)  # let the engine finish loading in the background, as a user would
        subprocess.run(["xdotool", "windowactivate", "--sync", wid, "key", "alt+F4"], env=env)
        closing = time.perf_counter()
        app.wait(timeout=60)
        return launch, time.perf_counter() - closing


def measure(name: str, command: list[str], runs: int) -> dict:
    self_tests = [self_test_s(command) for _ in range(runs)]
    with x_server():
        launch_and_quit_s(command)  # warm-up: the first run also fills the page cache
        timings = [launch_and_quit_s(command) for _ in range(runs)]
    launches, quits = zip(*timings, strict=True)
    return {
        "app": name,
        "self_test_s_p50": round(float(np.median(self_tests)), 2),
        "self_test_s_max": round(max(self_tests), 2),
        "launch_to_window_s_p50": round(float(np.median(launches)), 2),
        "launch_to_window_s_max": round(max(launches), 2),
        "quit_s_p50": round(float(np.median(quits)), 2),
        "quit_s_max": round(max(quits), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "dist" / "nfp-desktop")
    parser.add_argument("--source", action="store_true", help="also time the source install")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows, sizes = [], {}
    if (args.bundle / "nfp-desktop").is_file():
        rows.append(measure("bundle", [str(args.bundle / "nfp-desktop")], args.runs))
        sizes["bundle_mb_unpacked"] = size_mb(args.bundle)
        for packed in sorted(args.bundle.parent.glob("nfp*.tar.gz")) + sorted(
            args.bundle.parent.glob("nfp_*.deb")
        ):
            sizes[packed.name] = round(packed.stat().st_size / 1e6, 1)
    if args.source:
        rows.append(measure("source", [sys.executable, "-m", "nfp_desktop.app"], args.runs))
    if not rows:
        raise SystemExit(f"{args.bundle}: no bundle (bash scripts/build_app.sh), and no --source")
    report("app", rows, {"sizes_mb": sizes})
    print(sizes)


if __name__ == "__main__":
    main()
