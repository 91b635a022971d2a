"""Pure functions over conv kernels: BatchNorm folding, per-filter stats, drift, display tiles.

Every kernel argument is shaped (filters, in_channels/groups, *kernel).
"""
from __future__ import annotations

from typing import Optional

import torch

DEAD_RELATIVE_NORM = 1e-6  # a filter this small next to its layer's median cannot affect the output


def fold_batchnorm(
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    gamma: Optional[torch.Tensor],
    beta: Optional[torch.Tensor],
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel and bias that conv+BN compute at inference: W·γ/σ and (b−μ)·γ/σ+β.

    This is what a filter really does in eval mode; raw kernels of BN nets can look
    alike while their effective gains differ by orders of magnitude.
    """
    scale = torch.rsqrt(running_var.float() + eps)
    if gamma is not None:
        scale = scale * gamma.float()
    shape = (-1,) + (1,) * (weight.dim() - 1)
    w_eff = weight.float() * scale.reshape(shape)
    b = bias.float() if bias is not None else torch.zeros_like(scale)
    b_eff = (b - running_mean.float()) * scale
    if beta is not None:
        b_eff = b_eff + beta.float()
    return w_eff, b_eff


def filter_stats(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-filter L2 norm, mean |w|, and a dead flag (norm ≤ 1e-6 × the layer's median norm, or 0)."""
    flat = weight.float().reshape(weight.shape[0], -1)
    l2 = flat.norm(dim=1)
    mean_abs = flat.abs().mean(dim=1)
    threshold = DEAD_RELATIVE_NORM * l2.median()
    dead = (l2 <= threshold) | (l2 == 0)
    return {"l2": l2, "mean_abs": mean_abs, "dead": dead.float()}


def filter_drift(before: torch.Tensor, after: torch.Tensor) -> dict[str, torch.Tensor]:
    """How much each filter moved: cosine distance of the flattened kernels and relative norm change.

    Cosine distance is 0 for an unchanged direction and 2 for a flipped one; a filter that is
    zero on either side counts as fully changed (1) unless both are zero (0).
    """
    a = before.float().reshape(before.shape[0], -1)
    b = after.float().reshape(after.shape[0], -1)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    denom = na * nb
    cos = torch.where(denom > 0, (a * b).sum(dim=1) / denom.clamp_min(1e-30), (na == nb).float())
    rel = torch.where(na > 0, (nb - na) / na.clamp_min(1e-30), (nb > 0).float())
    return {"cosine_distance": (1 - cos).clamp(0, 2), "norm_change": rel}


def kernel_tiles(weight: torch.Tensor) -> torch.Tensor:
    """What the filter grid draws per filter: all input channels when there are ≤ 3 (an RGB-like
    first layer), else their mean, giving (filters, channels, *kernel) with channels 1 or ≤ 3."""
    if weight.shape[1] <= 3:
        return weight.float()
    return weight.float().mean(dim=1, keepdim=True)
