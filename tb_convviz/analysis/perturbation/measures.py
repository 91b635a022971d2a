"""Statistics of layer maps that several perturbation analyses reduce their copies to."""
from __future__ import annotations

import numpy as np
import torch


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a batch, shaped (1, C, 1, ...) to broadcast over it."""
    flat = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    std = flat.std(dim=1) if flat.shape[1] > 1 else torch.zeros(x.shape[1], device=x.device)
    return flat.mean(dim=1).reshape(shape), std.reshape(shape)


def variant_means(per_row: torch.Tensor, variants: int) -> torch.Tensor:
    """(variants · n, F) statistics of a variant-major block → (variants, F) averaged over the n probe images."""
    return per_row.reshape(variants, -1, per_row.shape[-1]).mean(1)


def map_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Uncentred cosine of maps (..., positions) → (...); two all-zero maps count as identical (1)."""
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    den = na * nb
    cos = torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-30), torch.zeros_like(den))
    return torch.where((na == 0) & (nb == 0), torch.ones_like(cos), cos)


def driven_energy(maps: torch.Tensor, blank: torch.Tensor) -> torch.Tensor:
    """Mean over positions of (a − a(blank))², maps (rows, F, P), blank (1, F, P) → (rows, F).

    Subtracting the response to the probe's mean colour removes bias and DC, so only what the
    image's structure drives counts. Squared in place: one temporary the size of maps, not two.
    """
    return (maps - blank).square_().mean(-1)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
