"""Encoder execution variants on this CPU: speed, and how far their fingerprints move.

Each variant runs the default checkpoint's encoder on log-mels of real music in batches of
BATCH_SEGMENTS: ONNX Runtime float32 on its export (what the engine runs), its int8 twin where
there is one (`nfp export --int8`, or --int8 FILE), torch eager float32,
channels-last memory layout, bfloat16 autocast, and torch.compile. Speed is segments per
second with 1 and 2 threads, and the milliseconds of one 5 s query's encoder call (18 segments:
two sub-hop shifts × 9) on 2 threads; with 1 thread both also measured in this process's CPU
time (`cpu` columns: what holds on a machine shared with other work). The accuracy cost is the
cosine between each variant's fingerprints and float32 eager's (1.0 = identical), and how often
the nearest stored segment changes when the variant's fingerprints are searched against float32
fingerprints of the same music.
Usage: python bench/bench_encoder.py [--tracks 4] [--repeats 3] [--int8 FILE]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import onnx_encoder, real_tracks, report

from engine.core.audio import SAMPLE_RATE, count_segments, frame_segments, load_audio
from engine.core.features import log_mel
from engine.model.checkpoint import default_checkpoint_path
from engine.model.fingerprint import BATCH_SEGMENTS
from engine.model.load import load_checkpoint
from engine.model.onnx_backend import int8_path
from engine.model.scoring import LONG_QUERY_S, LONG_QUERY_SHIFTS_S

# A 5 s file query's one encoder call: 9 segments at each of its sub-hop shifts (more only
# where the shifts disagree, engine.query.recognize).
QUERY_SEGMENTS = len(LONG_QUERY_SHIFTS_S) * count_segments(int(LONG_QUERY_S * SAMPLE_RATE))


def variants(
    model: torch.nn.Module, int8: Path | None
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """name → function log-mel (n, 1, 256, 32) → fingerprints (n, d) float32."""
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    compiled = torch.compile(copy.deepcopy(model))

    def last(x: torch.Tensor) -> torch.Tensor:
        return channels_last(x.contiguous(memory_format=torch.channels_last))

    def bf16(fn: Callable) -> Callable:
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(x).float()

        return run

    export = default_checkpoint_path().with_suffix(".onnx")
    onnx = {"onnxruntime float32": onnx_runtime(export)}
    if int8 is not None:
        onnx["onnxruntime int8"] = onnx_runtime(int8)
    return onnx | {
        "eager float32": model,
        "channels-last": last,
        "bfloat16 autocast": bf16(model),
        "channels-last + bfloat16": bf16(last),
        "torch.compile": compiled,
    }


def onnx_runtime(export: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The engine's path on `export`, with a session per thread count (its threads are set per
    session)."""
    sessions = {}

    def run(x: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        if threads not in sessions:
            sessions[threads] = onnx_encoder(export, threads)
        return torch.from_numpy(sessions[threads](x.numpy()))

    return run


def throughput(
    fn: Callable, batches: list[torch.Tensor], threads: int, repeats: int, clock=time.perf_counter
) -> float:
    """Segments per second of `clock`: wall time, or time.process_time for the CPU this process
    used (what a figure on a machine shared with other work can still be compared by)."""
    torch.set_num_threads(threads)
    with torch.inference_mode():
        fn(batches[0])  # warm-up (and compilation)
        started = clock()
        for _ in range(repeats):
            for batch in batches:
                fn(batch)
    return repeats * sum(len(b) for b in batches) / (clock() - started)


def fingerprints(fn: Callable, batches: list[torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([fn(b).float().numpy() for b in batches])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--int8", type=Path, help="an int8 twin (default: the default's, if made)")
    args = parser.parse_args()
    twin = int8_path(default_checkpoint_path().with_suffix(".onnx"))
    int8 = args.int8 or (twin if twin.is_file() else None)
    checkpoint = load_checkpoint(default_checkpoint_path(), backend="torch")
    model = checkpoint.model.eval()
    segments = np.concatenate([frame_segments(load_audio(t)) for t in real_tracks(args.tracks)])
    batches = [
        torch.from_numpy(log_mel(segments[i : i + BATCH_SEGMENTS]))
        for i in range(0, len(segments), BATCH_SEGMENTS)
    ]
    reference = fingerprints(model, batches)
    rows = []
    query = [batches[0][:QUERY_SEGMENTS]]
    for name, fn in variants(model, int8).items():
        fp = fingerprints(fn, batches)
        cosine = np.einsum("nd,nd->n", fp, reference)
        probes = np.arange(0, len(fp), 7)
        nearest = np.argmax(fp[probes] @ reference.T, axis=1)
        rows.append({
            "variant": name,
            "segments_per_s_1_thread": round(throughput(fn, batches, 1, args.repeats)),
            "segments_per_cpu_s_1_thread": round(
                throughput(fn, batches, 1, args.repeats, time.process_time)),
            "segments_per_s_2_threads": round(throughput(fn, batches, 2, args.repeats)),
            "ms_5s_query_2_threads": round(
                1000 * QUERY_SEGMENTS / throughput(fn, query, 2, 10 * args.repeats), 1),
            "cpu_ms_5s_query_1_thread": round(1000 * QUERY_SEGMENTS / throughput(
                fn, query, 1, 10 * args.repeats, time.process_time), 1),
            "mean_cosine": round(float(cosine.mean()), 5),
            "min_cosine": round(float(cosine.min()), 5),
            "nearest_changed_pct": round(100 * float(np.mean(nearest != probes)), 2),
        })  # fmt: skip
    report("encoder", rows, {"segments": len(segments), "checkpoint": checkpoint.path.name})


if __name__ == "__main__":
    main()
