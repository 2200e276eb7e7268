"""`nfp train …` and `nfp eval …`: registered into the engine's `nfp` command by entry points.

engine/plugins.py finds `register_train` and `register_eval` in the "nfp.commands" entry-point group
and calls the one whose command runs with its argparse subparsers (`nfp --help` lists both without
loading them); each handler returns an exit code. `python -m training.cli`
runs the same commands without the engine's front end.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.trainer import Progress


def register_train(subparsers: argparse._SubParsersAction) -> None:
    """Add `train corpus`, `train noise` and `train run`."""
    parser = subparsers.add_parser("train", help="build the training data and train an encoder")
    commands = parser.add_subparsers(dest="train_command", required=True)
    from training.corpus import add_corpus_arguments, run_corpus

    corpus = commands.add_parser("corpus", help="decode the Debian game music into corpus/")
    add_corpus_arguments(corpus)
    corpus.set_defaults(func=run_corpus)
    noise = commands.add_parser("noise", help="build the noise / babble / room-response bank")
    noise.add_argument("--out", default="corpus/degradations.npz")
    noise.set_defaults(func=_run_noise)
    run = commands.add_parser("run", help="train (resumes the run in out_dir if there is one)")
    run.add_argument("--config", help="JSON file of TrainConfig fields")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override one TrainConfig field (repeatable), e.g. --set d=64",
    )  # fmt: skip
    run.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    run.set_defaults(func=_run_train)
    reference = commands.add_parser(
        "reference", help="store the probe's float32 reference fingerprints in checkpoints"
    )
    reference.add_argument("checkpoints", type=Path, nargs="+")
    reference.set_defaults(func=_run_reference)


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    """Add `eval --checkpoint C`."""
    from training.evaluate import add_eval_arguments, run_eval

    parser = subparsers.add_parser("eval", help="evaluate a checkpoint: hit rates, false positives")
    add_eval_arguments(parser)
    parser.set_defaults(func=run_eval)


def _run_reference(args: argparse.Namespace) -> int:
    """Re-save checkpoints unchanged but for the reference fingerprints, made here in float32
    (a checkpoint saved before references existed gets them; weights stay bit-identical)."""
    from engine.model.export import save_checkpoint
    from engine.model.torch_backend import load_torch

    for path in args.checkpoints:
        c = load_torch(path)
        save_checkpoint(path, c.model, c.config, training=c.training, evaluation=c.evaluation,
                        background=c.background)  # fmt: skip
        print(f"{path}: reference fingerprints stored ({load_torch(path).reference.shape})")
    return 0


def _run_noise(args: argparse.Namespace) -> int:
    from training.noise import build_bank

    print(build_bank(args.out, progress=lambda msg: print(msg, file=sys.stderr)))
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.trainer import train

    try:
        cfg = load_config(args.config, args.set)
    except ValueError as e:
        print(f"nfp train: {e}", file=sys.stderr)
        return 1
    path = train(cfg, resume=not args.fresh, callback=print_progress)
    print(f"exported {path}" + (f" and {cfg.export}" if cfg.export else ""))
    return 0


def print_progress(p: Progress) -> None:
    """nanoGPT-style one-liners on stdout."""
    if p.kind == "step":
        print(f"step {p.step}/{p.steps}: loss {p.loss:.3f}, lr {p.lr:.1e}, "
              f"{p.s_per_step:.2f} s/step, data {p.data_s_per_step:.2f} s/step, "
              f"ETA {_hm(p.eta_s)}", flush=True)  # fmt: skip
    elif p.kind == "checkpoint":
        print(f"checkpoint at step {p.step} ({_hm(p.elapsed_s)} trained)", flush=True)
    elif p.kind == "start":
        print(f"training from step {p.step} of {p.steps}", flush=True)
    else:
        print(f"done: {p.step} steps, loss {p.loss:.3f}, {_hm(p.elapsed_s)}", flush=True)


def _hm(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.cli")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register_train(subparsers)
    register_eval(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
