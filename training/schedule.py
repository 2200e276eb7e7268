"""Learning-rate schedule: linear warm-up, then cosine decay to a floor (a pure function)."""

from __future__ import annotations

import math
from typing import Protocol


class ScheduleConfig(Protocol):
    lr: float
    min_lr: float
    warmup_steps: int
    steps: int


def get_lr(step: int, cfg: ScheduleConfig) -> float:
    """Learning rate for a 0-based step.

    Rises linearly from lr / warmup_steps (step 0) to lr (step warmup_steps - 1), then follows a
    half cosine from lr down to min_lr at step `steps`; after that it stays at min_lr.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
