"""Train every encoder of the family under one budget, evaluate each with the harness, and write
the comparison table (bench/results/encoders.json and a Markdown table for docs/encoders.md).

Every model gets the same data, steps, batch, seed and degradations, so the budget is the number
of training examples (steps × batch), not wall time; wall time, parameters and CPU cost are
reported beside the hit rates. Runs are resumable: rerunning skips finished models.
Usage: python bench/compare_encoders.py [--steps 600] [--batch 128] [--width 0.25]
         [--encoders scnn,fc,lstm,attn_lstm,attn_scnn,attn_resnet] [--d 128,64]
         [--projections divenc,fc] [--queries 100] [--distractors train] [--threads 1]
         [--report-only]
Several processes can train disjoint subsets side by side (one thread each); a final
`--report-only` run on an idle machine re-times every finished model and writes the table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from common import RESULTS, report

from engine.model.encoders import ENCODERS, count_parameters
from engine.model.torch_backend import load_torch
from training.cli import print_progress
from training.config import TrainConfig
from training.evaluate import evaluate
from training.protocol import EvalConfig
from training.trainer import train

SEGMENTS_PER_HOUR = 7200
RUNS = Path("runs/compare")


def cpu_ms_per_segment(model: torch.nn.Module, threads: int = 2, batch: int = 256) -> float:
    """Encoder time per segment, batched as indexing runs it (log-mel excluded)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(batch, 1, 256, 32)
    with torch.inference_mode():
        model(x)  # warm-up
        started = time.perf_counter()
        for _ in range(3):
            model(x)
    elapsed = time.perf_counter() - started
    torch.set_num_threads(previous)
    return elapsed / (3 * batch) * 1000


def run_name(encoder: str, d: int, projection: str) -> str:
    return f"{encoder}-{projection}-d{d}"


def run_one(base: TrainConfig, encoder: str, d: int, projection: str, harness: dict) -> dict:
    name = run_name(encoder, d, projection)
    cfg = replace(base, encoder=encoder, d=d, projection=projection, out_dir=str(RUNS / name))
    result_path = RUNS / name / "eval.json"
    if not result_path.is_file():
        started = time.time()
        model_path = train(cfg, callback=print_progress)
        train_s = time.time() - started
        result, _ = evaluate(EvalConfig(checkpoint=str(model_path), seed=0, **harness))
        result["train_wall_s"] = round(train_s, 1)
        result_path.write_text(json.dumps(result))
    result = json.loads(result_path.read_text())
    model = load_torch(RUNS / name / "model.pt").model
    return {"name": name, "parameters": count_parameters(model),
            "cpu_ms_per_segment": round(cpu_ms_per_segment(model), 3),
            "index_bytes_per_hour": d * 4 * SEGMENTS_PER_HOUR, **result}  # fmt: skip


def rows_of(runs: list[dict]) -> list[dict]:
    """One row per model, level and query length: exact / near / song hit rates in %."""
    rows = []
    for run in runs:
        for level, by_length in run["hit_rates"].items():
            for length, rates in by_length.items():
                rows.append({"model": run["name"], "level": level, "query_s": length,
                             **{k: round(100 * rates[k], 1) for k in ("exact", "near", "song")},
                             "params_M": round(run["parameters"] / 1e6, 2),
                             "cpu_ms_seg": run["cpu_ms_per_segment"]})  # fmt: skip
    return rows


def markdown(runs: list[dict]) -> str:
    """The docs tables: costs per model, then exact / near / song top-1 (%) per level."""
    head = ["model", "params (M)", "CPU ms/segment", "index MB/h (float32)", "FPR %", "train min"]
    lines = [_row(head), "|" + "---|" * len(head)]
    for run in runs:
        lines.append(_row([run["name"], f"{run['parameters'] / 1e6:.2f}",
                           f"{run['cpu_ms_per_segment']:.2f}",
                           f"{run['index_bytes_per_hour'] / 1e6:.2f}",
                           f"{100 * run['false_positive_rate_all']:.1f}",
                           f"{run.get('train_wall_s', 0) / 60:.0f}"]))  # fmt: skip
    for level in runs[0]["hit_rates"]:
        lengths = list(runs[0]["hit_rates"][level])
        head = ["model"] + [f"{s} s" for s in lengths]
        lines += ["", f"**{level}** — exact / near / song top-1 (%)", "", _row(head)]
        lines.append("|" + "---|" * len(head))
        for run in runs:
            rates = run["hit_rates"][level]
            cells = ["/".join(f"{100 * rates[s][k]:.0f}" for k in ("exact", "near", "song"))
                     for s in lengths]  # fmt: skip
            lines.append(_row([run["name"], *cells]))
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--d", default="128,64")
    parser.add_argument("--projections", default="divenc,fc")
    parser.add_argument("--queries", type=int, default=100, help="per level and length")
    parser.add_argument("--distractors", default="train", choices=("train", "none"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training/eval")
    parser.add_argument("--report-only", action="store_true", help="skip unfinished models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = replace(TrainConfig(), steps=args.steps, batch_size=args.batch, width=args.width,
                   max_minutes=0.0, seed=0, export="", threads=args.threads)  # fmt: skip
    harness = {"queries": args.queries, "distractors": args.distractors}
    grid = [(encoder, int(d), projection) for d in args.d.split(",")
            for projection in args.projections.split(",")
            for encoder in args.encoders.split(",")]  # fmt: skip
    if args.report_only:
        grid = [g for g in grid if (RUNS / run_name(*g) / "eval.json").is_file()]
    runs = [run_one(base, *g, harness) for g in grid]
    budget = {"steps": args.steps, "batch": args.batch, "width": args.width,
              "examples": args.steps * args.batch}  # fmt: skip
    report("encoders", rows_of(runs), {"budget": budget, "runs": runs})
    (RESULTS / "encoders.md").write_text(markdown(runs) + "\n")
    print(markdown(runs))


if __name__ == "__main__":
    main()
