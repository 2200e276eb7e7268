"""Encoder speed by family and channel width, on the engine's path (ONNX Runtime float32 of an
export).

Issue 16 asks for a wider encoder only "if the indexing and query budgets still hold": this
measures, for each width, segments per second with 1 and 2 threads, what that means for
indexing (real-time factor: a segment per 0.5 s of audio) and the encoder's share of a 5 s
query (9 segments at each of two sub-hop shifts). The weights are random (speed does not depend
on them); each width is saved, exported and loaded as a shipped checkpoint would be. Also the
multiply-adds of a segment and the CPU time of one 5 s query's call on one thread, which is how
the engine runs it (a call per core).
Usage: python bench/bench_width.py [--encoders scnn,scnn_lite] [--widths 0.25,0.5,1.0]
       [--repeats 3] [--out width]
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


def query_cpu_ms(onnx_path: Path, mels: np.ndarray, calls: int = 40) -> float:
    """Median CPU ms of one call on a 5 s query's segments, one thread."""
    encoder = onnx_encoder(onnx_path, 1)
    batch = mels[:FIVE_S_QUERY_SEGMENTS]
    encoder(batch)  # warm-up
    times = []
    for _ in range(calls):
        started = time.process_time()
        encoder(batch)
        times.append(time.process_time() - started)
    return 1000 * float(np.median(times))


def multiply_adds(model: torch.nn.Module) -> int:
    """Multiply-adds of the convolutions and linear layers for one segment."""
    total = 0

    def count(layer: torch.nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, torch.nn.Conv2d):
            kernel = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            total += out[0].numel() * kernel
        else:
            total += out[0].numel() * layer.in_features

    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, kinds)]
    with torch.inference_mode():
        model(torch.zeros(1, 1, 256, 32))
    for hook in hooks:
        hook.remove()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="scnn")
    parser.add_argument("--widths", default="0.25,0.5,1.0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="width", help="bench/results/OUT.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((BATCHES * BATCH_SEGMENTS, SAMPLE_RATE)).astype(np.float32) * 0.1
    mels = log_mel(audio)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders.split(","):
            for width in (float(w) for w in args.widths.split(",")):
                rows.append(measure(name, width, mels, Path(tmp), args.repeats))
    report(args.out, rows, {"mels": len(mels)})


def measure(name: str, width: float, mels: np.ndarray, tmp: Path, repeats: int) -> dict:
    torch.manual_seed(0)
    config = EncoderConfig(name=name, d=128, width=width, projection="divenc")
    model = build_encoder(config).eval()
    path = tmp / f"{name}-w{width:g}.pt"
    save_checkpoint(path, model, config)
    onnx_path = export_onnx(path)
    one, two = (segments_per_s(onnx_path, mels, t, repeats) for t in (1, 2))
    return {
        "encoder": name,
        "width": width,
        "parameters_M": round(count_parameters(model) / 1e6, 2),
        "multiply_adds_M": round(multiply_adds(model) / 1e6, 1),
        "segments_per_s_1_thread": round(one),
        "segments_per_s_2_threads": round(two),
        "indexing_x_real_time_2_threads": round(two * HOP_S),
        "encoder_ms_5s_query_2_threads": round(1000 * FIVE_S_QUERY_SEGMENTS / two, 1),
        "5s_query_call_cpu_ms_1_thread": round(query_cpu_ms(onnx_path, mels), 2),
    }


if __name__ == "__main__":
    main()
