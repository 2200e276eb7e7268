"""Shared bits of the benchmarks: real tracks to measure on, timing, and the table/JSON output."""

from __future__ import annotations

import json
import platform
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.api import SAMPLE_RATE, Fingerprinter, Library, index_folders, run_steps

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
RESULTS = Path(__file__).parent / "results"


def real_tracks(n: int) -> list[Path]:
    tracks = sorted(WESNOTH_MUSIC.glob("*.ogg"))[:n]
    if not tracks:
        raise SystemExit(f"{WESNOTH_MUSIC}: install wesnoth-1.16-music (scripts/setup.sh does)")
    return tracks


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2)}  # fmt: skip


def machine() -> dict:
    """Where a figure was measured: CPU model, usable cores, library versions."""
    from engine.core.threads import cpu_model, usable_cores
    from engine.model.onnx_backend import runtime

    return {"cpu": cpu_model(), "cores": usable_cores(), "python": platform.python_version(),
            "onnxruntime": runtime().__version__}  # fmt: skip


def report(name: str, rows: list[dict], extra: dict | None = None) -> Path:
    """Print rows as a table and write them with the machine facts to bench/results/NAME.json."""
    facts = machine()
    print(f"measured on {facts['cpu']}, {facts['cores']} usable cores")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(_fmt(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c, "")).rjust(widths[c]) for c in columns))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"machine": facts, **(extra or {}), "rows": rows}, indent=1))
    print(f"wrote {out}")
    return out


def build_library(db: Path, tracks: list[Path], fingerprinter: Fingerprinter) -> Library:
    """A library at db of the tracks, linked into a music folder beside it and indexed as
    `nfp index` indexes them."""
    music = db.parent / "music"
    music.mkdir(parents=True, exist_ok=True)
    for track in tracks:
        if not (music / track.name).exists():
            (music / track.name).symlink_to(track.resolve())
    library = Library(db)
    run_steps(index_folders(library, [music], fingerprinter))
    return library


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """audio float32 (n,) at SAMPLE_RATE as a 16-bit mono WAV file at path."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _fmt(value: object) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


def onnx_encoder(export: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The engine's ONNX Runtime inference of an export, with its session options but a set
    number of threads: log-mel float32 (n, 1, 256, 32) → fingerprints float32 (n, d)."""
    from engine.model.onnx_backend import OnnxEncoder, runtime, session_options

    session = runtime().InferenceSession(str(export), session_options(threads),
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    return OnnxEncoder(session, "float32")
