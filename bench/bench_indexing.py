"""Indexing throughput on real music, split into decode, features, encoder and index insert.

Usage: python bench/bench_indexing.py [--tracks 10] [--checkpoint C]   (runs with 1 and 2 threads)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import real_tracks, report, timed

from engine.audio import SAMPLE_RATE, frame_segments, load_audio
from engine.checkpoint import default_checkpoint_path, load_checkpoint
from engine.features import log_mel
from engine.fingerprint import BATCH_SEGMENTS, Fingerprinter
from engine.index import VectorIndex


def measure(fingerprinter: Fingerprinter, tracks, threads: int) -> dict:
    torch.set_num_threads(threads)
    decode_s = features_s = encoder_s = 0.0
    fps, audio_s = [], 0.0
    for track in tracks:
        audio, t = timed(lambda track=track: load_audio(track))
        decode_s += t
        audio_s += len(audio) / SAMPLE_RATE
        segments = frame_segments(audio)
        with torch.inference_mode():
            for i in range(0, len(segments), BATCH_SEGMENTS):
                batch = segments[i : i + BATCH_SEGMENTS]
                mel, t = timed(lambda batch=batch: log_mel(batch))
                features_s += t
                fp, t = timed(lambda mel=mel: fingerprinter.encode(mel).numpy())
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
    checkpoint = load_checkpoint(args.checkpoint or default_checkpoint_path())
    fingerprinter = Fingerprinter(checkpoint)
    tracks = real_tracks(args.tracks)
    measure(fingerprinter, tracks[:1], 2)  # warm-up: first-call allocations, file cache
    rows = [measure(fingerprinter, tracks, threads) for threads in (1, 2)]
    report(
        "indexing",
        rows,
        {
            "checkpoint": checkpoint.path.name,
            "config": checkpoint.config.to_dict(),
            "bfloat16": fingerprinter.bfloat16,
        },
    )


if __name__ == "__main__":
    main()
