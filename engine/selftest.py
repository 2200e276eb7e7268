"""A quick check that an installation works end to end, without music or a library on disk.

Used by `nfp-desktop --self-test` (also inside the frozen app): loads the default checkpoint,
checks that this machine's fingerprints agree with the reference ones it carries (on the numeric
path chosen here), fingerprints generated audio, finds a planted excerpt in a tiny in-memory
index and lists the audio input devices.
"""

from __future__ import annotations

import time

import numpy as np

from engine.core.audio import SAMPLE_RATE
from engine.core.errors import NfpError, NoInputDeviceError
from engine.core.mic import input_devices
from engine.library.index import VectorIndex
from engine.library.segments import SegmentMap
from engine.model.checkpoint import default_checkpoint_path
from engine.model.fingerprint import Fingerprinter, check_reference
from engine.model.load import load_checkpoint
from engine.query.search import match_sequence

TRACK_S = 12.0  # room for the 5 s excerpt at 6 s: every segment encoded is self-test time
EXCERPT_START_S = 6.0
EXCERPT_S = 5.0


def melody(seconds: float, seed: int) -> np.ndarray:
    """Generated 'music': a random three-note chord every 250 ms, float32 (n,) at SAMPLE_RATE."""
    rng = np.random.default_rng(seed)
    note = SAMPLE_RATE // 4
    t = np.arange(note) / SAMPLE_RATE
    chords = [
        np.sin(2 * np.pi * 220 * 2 ** (rng.integers(0, 36, 3)[:, None] / 12) * t).sum(0)
        for _ in range(int(seconds * 4))
    ]
    return (0.2 * np.concatenate(chords) * np.exp(-2 * np.tile(t, len(chords)))).astype(np.float32)


def run_self_test() -> dict:
    """Returns a report dict; raises NfpError naming what failed."""
    started = time.perf_counter()
    checkpoint = load_checkpoint(default_checkpoint_path())
    fingerprinter = Fingerprinter(checkpoint)
    reference = check_reference(fingerprinter)
    if not reference["ok"]:
        raise NfpError(f"self-test: {reference['message']}")
    tracks = [fingerprinter.audio(melody(TRACK_S, seed)) for seed in (1, 2)]
    index = VectorIndex.build(np.concatenate(tracks), "Flat")
    segments = SegmentMap.from_lengths([len(t) for t in tracks])
    start = int(EXCERPT_START_S * SAMPLE_RATE)
    excerpt = melody(TRACK_S, 2)[start : start + int(EXCERPT_S * SAMPLE_RATE)]
    found = match_sequence(fingerprinter.audio(excerpt), index, segments)
    if found is None or found.track != 1 or abs(found.offset_s - EXCERPT_START_S) > 0.5:
        raise NfpError(f"self-test: a planted excerpt was not found ({found})")
    try:
        devices = len(input_devices())
    except NoInputDeviceError as e:
        devices = f"none ({e.cause})"
    return {
        "checkpoint": checkpoint.path.name,
        "d": checkpoint.d,
        "backend": checkpoint.backend,
        "precision": f"{fingerprinter.precision.chosen} ({fingerprinter.precision.reason})",
        "reference_cosine": reference["cosine"],
        "match_offset_s": round(found.offset_s, 2),
        "input_devices": devices,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
