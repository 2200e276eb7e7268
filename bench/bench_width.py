"""Encoder speed by channel width, on the engine's path (ONNX Runtime float32 of an export).

Issue 16 asks for a wider encoder only "if the indexing and query budgets still hold": this
measures, for each width, segments per second with 1 and 2 threads, what that means for
indexing (real-time factor: a segment per 0.5 s of audio) and the encoder's share of a 5 s
query (9 segments at each of two sub-hop shifts). The weights are random (speed does not depend
on them); each width is saved, exported and loaded as a shipped checkpoint would be.
Usage: python bench/bench_width.py [--widths 0.25,0.5,1.0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import onnx_encoder, report

from engine.core.audio import HOP_S, SAMPLE_RATE, count_segments
from engine.core.features import log_mel
from engine.model.encoders import EncoderConfig, build_encoder, count_parameters
from engine.model.export import export_onnx, save_checkpoint
from engine.model.fingerprint import BATCH_SEGMENTS

FIVE_S_QUERY_SEGMENTS = 2 * count_segments(5 * SAMPLE_RATE)  # two sub-hop shifts from 5 s on
BATCHES = 8


def segments_per_s(onnx_path: Path, mels: np.ndarray, threads: int, repeats: int) -> float:
    encoder = onnx_encoder(onnx_path, threads)
    encoder(mels[:BATCH_SEGMENTS])  # warm-up
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for lo in range(0, len(mels), BATCH_SEGMENTS):
            encoder(mels[lo : lo + BATCH_SEGMENTS])
        best = min(best, time.perf_counter() - started)
    return len(mels) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="0.25,0.5,1.0")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((BATCHES * BATCH_SEGMENTS, SAMPLE_RATE)).astype(np.float32) * 0.1
    mels = log_mel(audio)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in (float(w) for w in args.widths.split(",")):
            torch.manual_seed(0)
            config = EncoderConfig(name="scnn", d=128, width=width, projection="divenc")
            model = build_encoder(config).eval()
            path = Path(tmp) / f"scnn-w{width:g}.pt"
            save_checkpoint(path, model, config)
            onnx_path = export_onnx(path)
            one, two = (segments_per_s(onnx_path, mels, t, args.repeats) for t in (1, 2))
            rows.append({
                "width": width,
                "parameters_M": round(count_parameters(model) / 1e6, 2),
                "segments_per_s_1_thread": round(one),
                "segments_per_s_2_threads": round(two),
                "indexing_x_real_time_2_threads": round(two * HOP_S),
                "encoder_ms_5s_query_2_threads": round(1000 * FIVE_S_QUERY_SEGMENTS / two, 1),
            })  # fmt: skip
    report("width", rows, {"mels": len(mels)})


if __name__ == "__main__":
    main()
