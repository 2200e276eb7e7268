"""NT-Xent and the learning-rate schedule against values worked out by hand."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from training.loss import nt_xent, semi_hard_triplet
from training.schedule import get_lr


def test_nt_xent_orthogonal_pairs_by_hand() -> None:
    # z = [e1, e2, e1, e2]. Row 0 sees e2 (sim 0), e1 (sim 1, its partner), e2 (sim 0):
    # loss = -log(e^(1/tau) / (2 + e^(1/tau))), the same for every row by symmetry.
    eye = torch.eye(2)
    for tau in (1.0, 0.5):
        expected = math.log(2 + math.exp(1 / tau)) - 1 / tau
        assert nt_xent(eye, eye.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_asymmetric_pair_by_hand() -> None:
    # N = 1: each of the two rows has exactly one candidate, its partner: loss 0 whatever z is.
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8]])
    assert nt_xent(a, b, 0.05).item() == pytest.approx(0.0, abs=1e-6)
    # N = 2, tau = 1: a = [e1, e2], b = [u, e2] with u = (0.6, 0.8).
    # Row 0 (e1): candidates e2 (0), u (0.6, partner), e2 (0) → log(2 + e^0.6) - 0.6
    # Row 1 (e2): candidates e1 (0), u (0.8), e2 (1, partner) → log(1 + e^0.8 + e) - 1
    # Row 2 (u):  candidates e1 (0.6, partner), e2 (0.8), e2 (0.8) → log(e^0.6 + 2e^0.8) - 0.6
    # Row 3 (e2): candidates e1 (0), e2 (1, partner), u (0.8) → log(1 + e + e^0.8) - 1
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    e = math.exp
    rows = [
        math.log(2 + e(0.6)) - 0.6,
        math.log(1 + e(0.8) + e(1)) - 1,
        math.log(e(0.6) + 2 * e(0.8)) - 0.6,
        math.log(1 + e(1) + e(0.8)) - 1,
    ]
    assert nt_xent(a, b, 1.0).item() == pytest.approx(sum(rows) / 4, rel=1e-6)


def test_nt_xent_noise_negatives_by_hand() -> None:
    # N = 1, a = b = e1, one noise row n = (0.6, 0.8), tau = 1. Without n each row's only
    # candidate is its partner (loss 0); with it both rows see e1 (1, partner) and n (0.6):
    # loss = log(e + e^0.6) - 1. A noise row orthogonal to the music costs less than one near it.
    a = torch.tensor([[1.0, 0.0]])
    noise = torch.tensor([[0.6, 0.8]])
    expected = math.log(math.e + math.exp(0.6)) - 1
    assert nt_xent(a, a.clone(), 1.0, noise).item() == pytest.approx(expected, rel=1e-6)
    assert nt_xent(a, a.clone(), 1.0, noise[:0]).item() == pytest.approx(0.0, abs=1e-6)
    far = torch.tensor([[0.0, 1.0]])
    assert nt_xent(a, a.clone(), 1.0, far).item() < nt_xent(a, a.clone(), 1.0, noise).item()


def test_nt_xent_prefers_matching_pairs() -> None:
    z = torch.nn.functional.normalize(
        torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    )
    shuffled = z[torch.roll(torch.arange(8), 1)]
    assert nt_xent(z, z.clone()).item() < nt_xent(z, shuffled).item()


def test_semi_hard_triplet_by_hand() -> None:
    # a = [e1, e2], b = [u, e2] with u = (0.6, 0.8); cosine distances d = 1 - similarity.
    # Row 0 (e1): positive u at 0.4; negatives e2, e2 at 1.0, both farther → semi-hard 1.0.
    # Row 1 (e2): positive e2 at 0; negatives e1 at 1.0, u at 0.2 → semi-hard u at 0.2.
    # Row 2 (u):  positive e1 at 0.4; negatives e2, e2 at 0.2, none farther → farthest, 0.2.
    # Row 3 (e2): positive e2 at 0; negatives e1 at 1.0, u at 0.2 → semi-hard 0.2.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    margin = 0.5
    rows = [max(0.0, d_pos - d_neg + margin)
            for d_pos, d_neg in [(0.4, 1.0), (0.0, 0.2), (0.4, 0.2), (0.0, 0.2)]]  # fmt: skip
    assert semi_hard_triplet(a, b, margin).item() == pytest.approx(sum(rows) / 4, rel=1e-5)


def test_semi_hard_triplet_is_zero_once_pairs_are_apart_by_the_margin() -> None:
    eye = torch.eye(4)
    assert semi_hard_triplet(eye[:2], eye[:2].clone(), margin=0.9).item() == 0.0
    assert semi_hard_triplet(eye[:2], eye[:2].clone(), margin=1.1).item() == pytest.approx(0.1)


def test_lr_schedule_by_hand() -> None:
    cfg = SimpleNamespace(lr=1.0, min_lr=0.1, warmup_steps=10, steps=110)
    assert get_lr(0, cfg) == pytest.approx(0.1)  # first warm-up step: lr / warmup_steps
    assert get_lr(4, cfg) == pytest.approx(0.5)
    assert get_lr(9, cfg) == pytest.approx(1.0)  # end of warm-up
    assert get_lr(10, cfg) == pytest.approx(1.0)  # top of the cosine
    assert get_lr(60, cfg) == pytest.approx(0.55)  # half way: (lr + min_lr) / 2
    assert get_lr(110, cfg) == pytest.approx(0.1)
    assert get_lr(500, cfg) == pytest.approx(0.1)  # past the end it stays at the floor


def test_lr_schedule_is_monotone_after_warmup() -> None:
    cfg = SimpleNamespace(lr=3e-4, min_lr=1e-6, warmup_steps=5, steps=200)
    rates = [get_lr(s, cfg) for s in range(5, 201)]
    assert all(b <= a for a, b in itertools.pairwise(rates))
