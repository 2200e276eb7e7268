"""The harness's results as people read them: a text table, results.json, every query's outcome
and two plots (hit rate against query length; evidence of library against non-library queries)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.outcomes import Outcome
from training.protocol import DOMAINS, NONLIBRARY

RATE_KINDS = ("exact", "exact_or_repeat", "near", "song", "confident", "song_confident")
STRETCH_KINDS = ("near", "song", "song_confident")


def format_table(result: dict) -> str:
    """Hit rates (%) by level and match kind against query length, unseen packages and
    in-domain side by side, then the stretch cell and the false positives."""
    lengths = list(next(iter(result["hit_rates"].values())))
    head = f"{'level':6s} {'kind':15s}" + "".join(f"{s + ' s':>14s}" for s in lengths)
    lines = [head, f"{'':22s}" + f"{'unseen/in-dom':>14s}" * len(lengths), "-" * len(head)]
    for level, by_length in result["hit_rates"].items():
        in_domain = result.get("hit_rates_in_domain", {}).get(level, {})
        for kind in RATE_KINDS:
            cells = "".join(f"{100 * by_length[s][kind]:7.1f}" + (
                f"/{100 * in_domain[s][kind]:<6.1f}" if s in in_domain else " " * 7)
                for s in lengths)  # fmt: skip
            lines.append(f"{level:6s} {kind:15s}{cells}")
    lines += stretch_lines(result.get("hit_rates_stretch"))
    for level, by_length in result["false_positive_rate"].items():
        cells = "".join(f"{100 * by_length[s]:8.1f}" for s in lengths)
        lines.append(f"{level:6s} {'false positive':15s}{cells}")
    thresholds = result["calibration"]["evidence_threshold"]
    lines.append(f"{'':6s} {'threshold':15s}" + "".join(f"{v:8.2f}" for v in thresholds.values()))
    lines += [fpr_line(result["false_positives"]), fpr_line(result["false_positives_swapped"])]
    if result.get("false_positives_no_music"):
        lines.append(fpr_line(result["false_positives_no_music"]) + " (a room with no music)")
    long = result["false_positives"].get("3s_and_longer")
    if long:
        lo, hi = (100 * x for x in long["ci95"])
        counts = f"{long['false']} of {long['queries']}"
        lines.append(f"  of which 3-10 s queries: {100 * long['rate']:.2f} % "
                     f"(95 % CI {lo:.2f}-{hi:.2f} %, {counts})")  # fmt: skip
    return "\n".join(lines)


def stretch_lines(stretch: dict | None) -> list[str]:
    """The stretch cell's rates (%) by tempo against query length; none without the cell."""
    if not stretch or not stretch["by_tempo"]:
        return []
    by_tempo = stretch["by_tempo"]
    lengths = list(next(iter(by_tempo.values())))
    lines = [f"stretch ({stretch['level']}, {stretch['domain']}, tempo; pitch kept)"
             + "".join(f"{s + ' s':>8s}" for s in lengths)]  # fmt: skip
    for tempo, by_length in by_tempo.items():
        for kind in STRETCH_KINDS:
            cells = "".join(f"{100 * by_length[s][kind]:8.1f}" for s in lengths)
            lines.append(f"  x{tempo:6s} {kind:15s}{'':18s}{cells}")
    return lines


def fpr_line(measured: dict) -> str:
    """'false positives on nonlibrary-b: 0.42 % (95 % CI 0.25-0.70 %, 15 of 3600)'."""
    a = measured["all"]
    lo, hi = (100 * x for x in a["ci95"])
    return (f"false positives on {measured['measured_on']}: {100 * a['rate']:.2f} % "
            f"(95 % CI {lo:.2f}-{hi:.2f} %, {a['false']} of {a['queries']})")  # fmt: skip


def write_outputs(result: dict, outcomes: Sequence[Outcome], out_dir: Path) -> None:
    """results.json, table.txt, queries.npz (every query's outcome), hit_rate.png, scores.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = {}
    for name in ("found_track", "true_track", "offset_s", "true_start_s", "evidence", "score",
                 "used_segments"):  # fmt: skip
        columns[name] = np.concatenate([getattr(o, name) for o in outcomes])
    for name in ("level", "kind", "length_s", "n_segments", "tempo"):
        columns[name] = np.concatenate([[getattr(o, name)] * len(o.evidence) for o in outcomes])
    np.savez_compressed(out_dir / "queries.npz", **columns)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    (out_dir / "table.txt").write_text(format_table(result) + "\n")
    plot_hit_rates(result, out_dir / "hit_rate.png")
    plot_scores(outcomes, result["calibration"], out_dir / "scores.png")


def plot_hit_rates(result: dict, path: Path) -> None:
    """Hit rate against query length: one line per level and match kind."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"low": "tab:green", "mid": "tab:orange", "high": "tab:red"}
    styles = {"exact": ":", "near": "--", "song": "-"}
    for level, by_length in result["hit_rates"].items():
        lengths = [float(s) for s in by_length]
        for kind, style in styles.items():
            rates = [100 * by_length[s][kind] for s in by_length]
            ax.plot(lengths, rates, style, marker="o", ms=3,
                    color=colours.get(level), label=f"{level} {kind}")  # fmt: skip
    ax.set(xlabel="query length (s)", ylabel="top-1 hit rate (%)", ylim=(0, 101),
           title="Hit rate vs query length")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(ncol=3, fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scores(outcomes: Sequence[Outcome], calibration: dict, path: Path) -> None:
    """Evidence of library vs non-library queries per query length, threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({(o.n_segments, o.length_s) for o in outcomes})
    fig, axes = plt.subplots(2, (len(lengths) + 1) // 2, figsize=(11, 5.5), squeeze=False)
    for ax, (n_seg, length_s) in zip(axes.flat, lengths, strict=False):
        lib = np.concatenate([o.evidence for o in outcomes if o.kind in DOMAINS
                              and o.tempo == 1.0 and o.n_segments == n_seg])  # fmt: skip
        non = np.concatenate([o.evidence for o in outcomes
                              if o.kind in NONLIBRARY and o.n_segments == n_seg])  # fmt: skip
        bins = np.linspace(0, max(lib.max(), non.max(), 1e-3) * 1.02, 40)
        ax.hist(lib, bins, alpha=0.6, color="tab:blue", label="library")
        ax.hist(non, bins, alpha=0.6, color="tab:gray", label="not in library")
        ax.axvline(calibration["evidence_threshold"][str(n_seg)], color="k", ls="--",
                   label=f"threshold ({100 * calibration['target_fpr']:g} % FPR)")  # fmt: skip
        ax.set_title(f"{length_s:g} s query ({n_seg} segments)", fontsize=9)
        ax.set_xlabel("evidence", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
