"""SpecAugment-style masks on a log-mel batch: one cutout rectangle and a few frequency bands."""

from __future__ import annotations

import torch


def spec_augment(
    mel: torch.Tensor,
    generator: torch.Generator,
    *,
    cutout_prob: float = 0.5,
    cutout_max_frac: float = 0.5,
    freq_masks: int = 2,
    freq_mask_max: int = 24,
) -> torch.Tensor:
    """Mask a log-mel batch float32 (B, 1, F, T); returns a new tensor of the same shape.

    Masked cells take the example's mean value, so a mask removes information without adding an
    edge the encoder could key on. Masks are built by broadcasting comparisons (no Python loop
    over examples).
    """
    batch, _, n_freq, n_time = mel.shape
    f = torch.arange(n_freq).view(1, n_freq, 1)
    t = torch.arange(n_time).view(1, 1, n_time)
    mask = torch.zeros(batch, n_freq, n_time, dtype=torch.bool)
    # One rectangle per selected example.
    use = torch.rand(batch, generator=generator) < cutout_prob
    height = (torch.rand(batch, generator=generator) * cutout_max_frac * n_freq).long()
    width = (torch.rand(batch, generator=generator) * cutout_max_frac * n_time).long()
    f0 = (torch.rand(batch, generator=generator) * (n_freq - height + 1)).long()
    t0 = (torch.rand(batch, generator=generator) * (n_time - width + 1)).long()
    in_f = (f >= f0.view(-1, 1, 1)) & (f < (f0 + height).view(-1, 1, 1))
    rect = in_f & (t >= t0.view(-1, 1, 1)) & (t < (t0 + width).view(-1, 1, 1))
    mask |= rect & use.view(-1, 1, 1)
    # Frequency bands across all frames.
    for _ in range(freq_masks):
        w = (torch.rand(batch, generator=generator) * (freq_mask_max + 1)).long()
        start = (torch.rand(batch, generator=generator) * (n_freq - w + 1)).long()
        mask |= (f >= start.view(-1, 1, 1)) & (f < (start + w).view(-1, 1, 1))
    fill = mel.mean(dim=(1, 2, 3), keepdim=True).expand_as(mel)
    return torch.where(mask.unsqueeze(1), fill, mel)
