"""Audio → fingerprints: one L2-normalised d-vector per 1 s segment, every 0.5 s.

The log-mel front end is numpy (engine.core.features); the encoder runs on the checkpoint's backend:
ONNX Runtime (engine.model.onnx_backend) or torch (engine.model.torch_backend). Either runs float32
unless a faster numeric path is proven right on this machine by the probe (docs/architecture.md,
Numeric paths); every checkpoint also carries reference fingerprints that `check_reference` holds
this machine's against.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.core.audio import frame_segments
from engine.core.errors import NfpError
from engine.core.features import log_mel
from engine.core.stamps import is_verified, remember_verified
from engine.core.threads import usable_cores
from engine.model.checkpoint import Checkpoint
from engine.model.load import make_encoder
from engine.model.precision import PRECISION_ENV, Precision, requested_precision
from engine.model.probe import MIN_COSINE, min_cosine, probe_mel
from engine.model.scoring import SILENCE_RMS, segment_rms

# Segments per batch: what indexing shares out to its workers and a track list reports progress
# by, and a torch encoder's call. Measured here (shipped d = 128, one thread): 64 a call as fast
# as 256 or faster (2.0 against 2.4 CPU ms a segment, its activations stay in cache), and peak
# memory 0.4 GB instead of 1.1 GB.
BATCH_SEGMENTS = 64
# Segments per log-mel and encoder call on ONNX Runtime, whose every call runs on one core while
# the Fingerprinter runs calls side by side, one per core. Measured on a 2-core AMD EPYC under
# load: 1.66 CPU ms a segment at 8 against 1.9–2.3 at 64 (a segment's first activations are
# 0.5 MB: eight stay in the core's cache), 3.4 alone; idle, a 5 s query's 18 segments took 13.1
# ms as two calls side by side where one call on both cores took 18.8 (log-mel included). On
# one core any call of two or more segments gives each the same fingerprint, bit for bit, and a
# segment alone another one, so none is split off alone (call_slices): a query's fingerprints
# are those its library stored.
ONE_CORE_CALL_SEGMENTS = 8
# A stored segment this far under its track's loud level (the LOUD_PERCENTILE of its segments'
# RMS) is silence too: music that quiet lies under a room's noise when the track plays at a
# volume its loud parts are heard at, and what is left of it (a fade's tail, a recording's hiss)
# looks like that noise. A harness query of room noise alone named singularity-music's "Media
# Threat" by the four segments at the end of its fade (-55 dBFS, 42 dB under its loud level),
# which -60 dBFS alone kept. Of the corpus's 179,617 segments this stores 1.13 % as silence,
# SILENCE_RMS alone 0.72 %.
QUIET_DB = 35.0
LOUD_PERCENTILE = 95
# What a library's rows of a file are, by the rules they were made under: 1, every segment's
# fingerprint; 2, silent segments as zero rows (blank_silence). A library keeps each track's
# version, and indexing fingerprints a track made under an older one again.
ROWS_VERSION = 2


class Fingerprinter:
    """Runs a checkpoint's encoder on audio; thread-safe."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        batch_segments: int = BATCH_SEGMENTS,
        precision: str | None = None,
        threads: int = 0,
    ) -> None:
        """`threads`: cores this fingerprinter's calls are spread over (0: every usable core);
        1 for callers that spread calls themselves (engine.library.parallel.LocalSource)."""
        self.checkpoint = checkpoint
        self.d = checkpoint.d
        self.batch_segments = batch_segments
        self.cores = threads or usable_cores()
        # ONNX Runtime: every call on one core, calls side by side (ONE_CORE_CALL_SEGMENTS);
        # torch's threads are the process's, so each call runs on all of them.
        spread = checkpoint.backend == "onnx"
        self.encoder = make_encoder(checkpoint, requested_precision(precision))
        self.call_segments = ONE_CORE_CALL_SEGMENTS if spread else batch_segments
        side_by_side = spread and self.cores > 1
        self._pool = ThreadPoolExecutor(self.cores, "nfp-encoder") if side_by_side else None

    @property
    def precision(self) -> Precision:
        return self.encoder.precision

    def segments(self, segments: np.ndarray) -> np.ndarray:
        """Segments float32 (n, SEGMENT_SAMPLES) → fingerprints float32 (n, d), in calls of
        about call_segments (never one segment alone, call_slices) spread over the cores: each
        call runs on one core, so these are the fingerprints of whole batches, bit for bit."""
        out = np.empty((len(segments), self.d), np.float32)

        def fill(rows: slice) -> None:
            out[rows] = self.encode(log_mel(segments[rows]))

        cores = self.cores if self._pool else 1
        calls = spread_slices(len(segments), cores, self.call_segments)
        if self._pool is None or len(calls) < 2:
            for rows in calls:
                fill(rows)
        else:
            list(self._pool.map(fill, calls))
        return out

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """Log-mel float32 (n, 1, N_MELS, N_FRAMES) → fingerprints float32 (n, d)."""
        return self.encoder(mel)

    def audio(self, audio: np.ndarray) -> np.ndarray:
        """Audio float32 (n,) at SAMPLE_RATE → fingerprints float32 (count_segments(n), d)."""
        return self.segments(frame_segments(audio))


def blank_silence(fingerprints: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Zero, in place, the rows of fingerprints float32 (count_segments(n), d) whose segments of
    a track's audio float32 (n,) are silent (silence_level); returns them. A segment's log-mel
    is normalised by its own maximum, so a near-silent one (a gap, the end of a fade) shows the
    recording's hiss, which looks like any room's noise: stored as it is, it matches a query with
    no music in it. A zero row scores 0 against every query, under the chance similarity of
    other music (0.3-0.5 here), so it adds no evidence."""
    fingerprints[silent_segments(audio)] = 0.0
    return fingerprints


def silent_segments(audio: np.ndarray) -> np.ndarray:
    """Which segments of a track's audio float32 (n,) are silent (silence_level), bool
    (count_segments(n),)."""
    rms = segment_rms(frame_segments(audio))
    return rms <= silence_level(rms)


def silence_level(rms: np.ndarray) -> float:
    """The RMS at or under which a segment of a track is silent, from the RMS float32 (L,) of
    all its segments: the app's SILENCE_RMS, or QUIET_DB under the track's loud level if that is
    higher."""
    loud = float(np.percentile(rms, LOUD_PERCENTILE))
    return max(SILENCE_RMS, loud * 10 ** (-QUIET_DB / 20))


def spread_slices(n: int, cores: int, size: int) -> list[slice]:
    """Slices covering range(n) in a multiple of `cores` calls of at most about `size` (a
    short query's segments in one call per core), none of one item alone (call_slices)."""
    if not n:
        return []
    calls = cores * math.ceil(n / (cores * size))
    return call_slices(n, max(2, math.ceil(n / calls)))


def call_slices(n: int, size: int) -> list[slice]:
    """Slices of `size` covering range(n), a last single item joined to the one before it."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], n], strict=True)]


def check_reference(fingerprinter: Fingerprinter) -> dict:
    """This machine's fingerprints of the probe signal against the reference ones the
    checkpoint carries: {"ok", "cosine", "message"}. Not ok means every answer would be wrong."""
    checkpoint = fingerprinter.checkpoint
    if checkpoint.reference is None:
        return {"ok": True, "cosine": None,
                "message": f"{checkpoint.path.name} carries no reference fingerprints"}  # fmt: skip
    cosine = min_cosine(fingerprinter.encode(probe_mel()), checkpoint.reference)
    if cosine >= MIN_COSINE:
        message = (
            f"fingerprints agree with {checkpoint.path.name}'s reference (cosine {cosine:.4f})"
        )
        return {"ok": True, "cosine": round(cosine, 4), "message": message}
    chosen = fingerprinter.precision.chosen
    fix = (f"try {PRECISION_ENV}=float32" if chosen != "float32"
           else "the checkpoint or its export is damaged: export or install it again")  # fmt: skip
    message = (
        f"{checkpoint.path}: this machine's fingerprints differ from the checkpoint's reference "
        f"(cosine {cosine:.3f} < {MIN_COSINE}, {chosen} on {checkpoint.backend}): answers "
        f"would be wrong; {fix}"
    )
    return {
        "ok": False,
        "cosine": None if np.isnan(cosine) else round(cosine, 4),
        "message": message,
    }


def require_reference(fingerprinter: Fingerprinter) -> None:
    """Refuse to index or answer with fingerprints that are not the checkpoint's reference (a
    machine's wrong numeric path, an export with damaged weights): each answer would be wrong.
    A pass is remembered for this very export, runtime, numeric path, code and CPU
    (engine.model.verified), so each machine runs the probe once, not on every load."""
    record = fingerprinter.encoder.reference_stamp
    if record is not None and is_verified(record):
        return
    check = check_reference(fingerprinter)
    if not check["ok"]:
        raise NfpError(check["message"])
    # An int8 pass is remembered by the probe alone, which also holds it to float32's neighbours.
    int8 = fingerprinter.precision.chosen == "int8"
    if record is not None and check["cosine"] is not None and not int8:
        remember_verified(record)
