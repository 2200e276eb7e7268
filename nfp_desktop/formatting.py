"""How times and durations read in the window: `m:ss`, ETAs, short paths."""

from __future__ import annotations

import math


def format_time(seconds: float) -> str:
    """Seconds → `m:ss`, rounded (a clip from 1:59.6 reads 2:00; negative clamps to 0:00;
    hours stay in minutes, like players show)."""
    whole = max(0, round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def format_position(position_s: float, duration_s: float) -> str:
    """`2:31 / 4:05`, the position never shown past the end (durations round, like players)."""
    total_s = round(duration_s)
    return f"{format_time(min(position_s, total_s))} / {format_time(total_s)}"


def plural(count: int, noun: str) -> str:
    """`1 track`, `2 tracks`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def estimate_eta_s(elapsed_s: float, done: float, total: float) -> float | None:
    """Seconds left at the pace so far (done and total in files, or a share of 1), or None
    before anything is done."""
    if done <= 0 or total <= done:
        return None if done <= 0 else 0.0
    return elapsed_s / done * (total - done)


def format_eta(eta_s: float | None) -> str:
    if eta_s is None:
        return "estimating time left…"
    if eta_s < 60:
        return f"about {max(1, math.ceil(eta_s))} s left"
    minutes = math.ceil(eta_s / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60:02d} min left"
