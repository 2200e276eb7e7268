"""The L2 projection g: from the encoder's embedding h to the unit-norm fingerprint."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.encoders.export_forms import elu

DIVENC_HIDDEN = 32  # the seed's per-slice hidden width


class DivideAndEncode(nn.Module):
    """The seed's "divide and encode" head: h is split into d slices, each maps to one output.

    Implemented as grouped 1×1 convolutions, which is the same as d separate
    Linear(h/d, 32) → ELU → Linear(32, 1) blocks but one kernel call each.
    """

    def __init__(self, h: int, d: int) -> None:
        super().__init__()
        if h % d:
            raise ValueError(f"embedding width {h} is not divisible by d={d}")
        self.d = d
        self.hidden = nn.Conv1d(h, d * DIVENC_HIDDEN, kernel_size=1, groups=d)
        self.out = nn.Conv1d(d * DIVENC_HIDDEN, d, kernel_size=1, groups=d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h float32 (B, h) → z float32 (B, d), not yet normalised."""
        return self.out(elu(self.hidden(h.unsqueeze(-1)))).squeeze(-1)


class FullyConnected(nn.Module):
    """The alternative head the KAIST report tested: one Linear(h, d)."""

    def __init__(self, h: int, d: int) -> None:
        super().__init__()
        self.d = d
        self.linear = nn.Linear(h, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h)


PROJECTIONS = {"divenc": DivideAndEncode, "fc": FullyConnected}


def build_projection(name: str, h: int, d: int) -> nn.Module:
    if name not in PROJECTIONS:
        raise ValueError(f"unknown projection {name!r}; choose from {sorted(PROJECTIONS)}")
    return PROJECTIONS[name](h, d)


def l2_normalize(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(z, p=2, dim=-1)
