"""Is a candidate model better than the shipped one? `python -m training.compare BASE CANDIDATE`.

Both arguments are `nfp eval` results.json files made with the same seed and corpus, so both
models answered the same queries. Per level and length, the rate of confident right answers
(song_confident) of each, with 95 % Wilson intervals; a cell is "better" or "worse" only when
the intervals do not overlap. Pooled over lengths, each level's figure rests on six times the
queries, so its interval is the one that decides: the candidate is adopted (exit status 0) when
its unseen-package mid level beats the base's beyond both intervals, no unseen level is worse
beyond them, and its false positives at 3-10 s stay within the target.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from training.rates import MAX_FPR, wilson

KIND = "song_confident"
DOMAINS = {"unseen": "hit_rates", "in-domain": "hit_rates_in_domain"}


def interval(rate: float, queries: int) -> tuple[float, float]:
    return wilson(round(rate * queries), queries)


def verdict(base: tuple[float, float], candidate: tuple[float, float]) -> str:
    """ "better" / "worse" when the 95 % intervals (lo, hi) do not overlap, else "same"."""
    if candidate[0] > base[1]:
        return "better"
    if candidate[1] < base[0]:
        return "worse"
    return "same"


def pooled(by_length: dict) -> tuple[float, int]:
    """A level's rate over all its lengths, and the number of queries it rests on."""
    queries = sum(cell["queries"] for cell in by_length.values())
    hits = sum(round(cell[KIND] * cell["queries"]) for cell in by_length.values())
    return hits / queries, queries


def compare_domain(base: dict, candidate: dict) -> tuple[list[str], dict[str, str]]:
    """Table rows of one domain's cells and pooled levels, and each level's pooled verdict."""
    rows, levels = [], {}
    for level, by_length in base.items():
        for length, cell in by_length.items():
            other = candidate[level][length]
            a, b = (interval(c[KIND], c["queries"]) for c in (cell, other))
            rows.append(_row(level, f"{length} s", cell[KIND], other[KIND], verdict(a, b)))
        (rate_a, n_a), (rate_b, n_b) = pooled(by_length), pooled(candidate[level])
        levels[level] = verdict(interval(rate_a, n_a), interval(rate_b, n_b))
        rows.append(_row(level, "pooled", rate_a, rate_b, levels[level]))
    return rows, levels


def _row(level: str, length: str, a: float, b: float, word: str) -> str:
    return f"{level:5} {length:>7} {100 * a:7.1f} {100 * b:10.1f}   {word}"


def long_fpr(result: dict) -> float:
    measured = result["false_positives"]
    return (measured.get("3s_and_longer") or measured["all"])["rate"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__)
    parser.add_argument("base", type=Path, help="results.json of the shipped model")
    parser.add_argument("candidate", type=Path, help="results.json of the candidate")
    args = parser.parse_args(argv)
    base, candidate = (json.loads(p.read_text()) for p in (args.base, args.candidate))
    verdicts = {}
    for domain, key in DOMAINS.items():
        rows, verdicts[domain] = compare_domain(base[key], candidate[key])
        print(f"{domain}: {KIND} (%)   base  candidate")
        print("\n".join(rows))
    fpr = long_fpr(candidate)
    print(f"false positives at 3-10 s: base {100 * long_fpr(base):.2f} %, "
          f"candidate {100 * fpr:.2f} % (target <= {100 * MAX_FPR:.1f} %)")  # fmt: skip
    rooms = [r.get("false_positives_no_music") for r in (base, candidate)]
    if all(rooms):
        rates = [100 * r["all"]["rate"] for r in rooms]
        print(f"false positives on a room with no music: base {rates[0]:.2f} %, "
              f"candidate {rates[1]:.2f} %")  # fmt: skip
    unseen = verdicts["unseen"]
    adopt = unseen.get("mid") == "better" and "worse" not in unseen.values() and fpr <= MAX_FPR
    print("adopt the candidate" if adopt else "keep the base")
    return 0 if adopt else 1


if __name__ == "__main__":
    sys.exit(main())
