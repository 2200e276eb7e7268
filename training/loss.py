"""The contrastive loss of Chang et al. (SimCLR's NT-Xent) as a pure function."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2N embeddings; returns a scalar tensor.

    z_a, z_b float (N, d): L2-normalised embeddings of N clean segments and their replicas; row i
    of z_a and row i of z_b are the positive pair, every other row of either is a negative. Each
    of the 2N rows is a softmax classification of its partner among the other 2N - 1 rows, with
    similarities divided by tau; the loss is the mean over the 2N rows.
    """
    n = z_a.shape[0]
    z = torch.cat([z_a, z_b], dim=0)  # (2N, d)
    sim = z @ z.T / tau  # (2N, 2N)
    # A row is never its own candidate.
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)
