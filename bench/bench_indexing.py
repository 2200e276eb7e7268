"""Indexing throughput on real music, split into decode, features, encoder and index insert.

The encoder runs as the engine runs it (ONNX Runtime where installed, on every usable core);
the 1-core row narrows this process's CPU affinity, as a container or taskset would.
Usage: python bench/bench_indexing.py [--tracks 10] [--checkpoint C]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from common import real_tracks, report, timed

from engine.core.audio import SAMPLE_RATE, frame_segments, load_audio
from engine.core.features import log_mel
from engine.library.index import VectorIndex
from engine.model.checkpoint import default_checkpoint_path
from engine.model.fingerprint import BATCH_SEGMENTS, Fingerprinter
from engine.model.load import load_checkpoint


def measure(fingerprinter: Fingerprinter, tracks, threads: int) -> dict:
    decode_s = features_s = encoder_s = 0.0
    fps, audio_s = [], 0.0
    for track in tracks:
        audio, t = timed(lambda track=track: load_audio(track))
        decode_s += t
        audio_s += len(audio) / SAMPLE_RATE
        segments = frame_segments(audio)
        for i in range(0, len(segments), BATCH_SEGMENTS):
            batch = segments[i : i + BATCH_SEGMENTS]
            mel, t = timed(lambda batch=batch: log_mel(batch))
            features_s += t
            fp, t = timed(lambda mel=mel: fingerprinter.encode(mel))
            encoder_s += t
            fps.append(fp)
    _, insert_s = timed(lambda: VectorIndex.build(np.concatenate(fps)))
    total = decode_s + features_s + encoder_s + insert_s
    return {
        "threads": threads,
        "audio_h": round(audio_s / 3600, 3),
        "decode_x": audio_s / decode_s,
        "features_x": audio_s / features_s,
        "encoder_x": audio_s / encoder_s,
        "insert_x": audio_s / insert_s,
        "total_x_realtime": audio_s / total,
        "segments_per_s": sum(len(f) for f in fps) / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=10)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    tracks = real_tracks(args.tracks)
    cores = sorted(os.sched_getaffinity(0))
    rows = []
    for threads in (1, len(cores)):
        os.sched_setaffinity(0, cores[:threads])
        checkpoint = load_checkpoint(args.checkpoint or default_checkpoint_path())
        fingerprinter = Fingerprinter(checkpoint)
        measure(fingerprinter, tracks[:1], threads)  # warm-up: first-call allocations, file cache
        rows.append(measure(fingerprinter, tracks, threads))
    os.sched_setaffinity(0, cores)
    report(
        "indexing",
        rows,
        {
            "checkpoint": checkpoint.path.name,
            "config": checkpoint.config.to_dict(),
            "backend": checkpoint.backend,
            "precision": fingerprinter.precision.chosen,
        },
    )


if __name__ == "__main__":
    main()
