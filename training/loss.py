"""The training losses as pure functions of two batches of paired embeddings.

nt_xent is the contrastive loss of Chang et al. (SimCLR's NT-Xent); semi_hard_triplet is the
triplet loss of FaceNet (Schroff et al. 2015) that Now-playing (Gfeller et al. 2017) trained
with, adapted to self-supervised pairs: reported better than NT-Xent at small batch sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _pairs(z_a: torch.Tensor, z_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine similarities among the 2N rows (2N, 2N), the mask of each row itself (2N, 2N)
    and each row's partner index (2N,)."""
    n = z_a.shape[0]
    z = torch.cat([z_a, z_b], dim=0)  # (2N, d)
    itself = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return z @ z.T, itself, partner


def nt_xent(
    z_a: torch.Tensor, z_b: torch.Tensor, tau: float = 0.05, z_neg: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2N embeddings; returns a scalar tensor.

    z_a, z_b float (N, d): L2-normalised embeddings of N clean segments and their replicas; row i
    of z_a and row i of z_b are the positive pair, every other row of either is a negative. Each
    of the 2N rows is a softmax classification of its partner among the other 2N - 1 rows, with
    similarities divided by tau; the loss is the mean over the 2N rows.

    z_neg float (M, d), optional: embeddings that are nobody's partner (a room with no music in
    it), added to every row's candidates as negatives, so that music is pushed away from them.
    """
    sim, itself, partner = _pairs(z_a, z_b)
    # A row is never its own candidate.
    logits = (sim / tau).masked_fill(itself, float("-inf"))
    if z_neg is not None and len(z_neg):
        logits = torch.cat([logits, torch.cat([z_a, z_b]) @ z_neg.T / tau], dim=1)
    return F.cross_entropy(logits, partner)


def semi_hard_triplet(z_a: torch.Tensor, z_b: torch.Tensor, margin: float = 0.4) -> torch.Tensor:
    """Semi-hard triplet loss over 2N embeddings; returns a scalar tensor.

    z_a, z_b float (N, d) as for nt_xent. Each of the 2N rows is an anchor, its partner the
    positive. Distances are cosine distances (1 - similarity). The negative is the nearest one
    farther than the positive (semi-hard); an anchor without one takes its farthest negative, as
    FaceNet does, so that early training does not collapse onto the hardest negatives. The loss
    is the mean over anchors of max(0, d(anchor, positive) - d(anchor, negative) + margin).
    """
    sim, itself, partner = _pairs(z_a, z_b)
    rows = torch.arange(len(sim), device=sim.device)
    dist = 1.0 - sim  # (2N, 2N)
    d_pos = dist[rows, partner]  # (2N,)
    negative = ~itself
    negative[rows, partner] = False
    inf = torch.tensor(float("inf"), device=sim.device)
    outside = negative & (dist > d_pos[:, None])
    semi_hard = torch.where(outside, dist, inf).min(dim=1).values
    farthest = torch.where(negative, dist, -inf).max(dim=1).values
    d_neg = torch.where(outside.any(dim=1), semi_hard, farthest)
    return F.relu(d_pos - d_neg + margin).mean()
