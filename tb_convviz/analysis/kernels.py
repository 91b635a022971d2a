"""Pure functions over conv kernels: BatchNorm folding, per-filter stats, drift, display tiles.

Every kernel argument is shaped (filters, in_channels/groups, *kernel).
"""
from __future__ import annotations

from typing import Optional

import torch

DEAD_RELATIVE_NORM = 1e-6  # a filter this small next to its layer's median cannot affect the output


def fold_batchnorm(
    bias: Optional[torch.Tensor],
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    gamma: Optional[torch.Tensor],
    beta: Optional[torch.Tensor],
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-filter scale γ/σ and the effective bias (b−μ)·γ/σ+β of conv+BN at inference.

    The effective kernel is W·scale per filter: what a filter really does in eval mode. Raw
    kernels of BN nets can look alike while their effective gains differ by orders of magnitude.
    Only the scale is stored; readers fold it in (`format.effective_kernel`).
    """
    scale = torch.rsqrt(running_var.float() + eps)
    if gamma is not None:
        scale = scale * gamma.float()
    b = bias.float() if bias is not None else torch.zeros_like(scale)
    b_eff = (b - running_mean.float()) * scale
    if beta is not None:
        b_eff = b_eff + beta.float()
    return scale, b_eff


def filter_stats(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-filter L2 norm, mean |w|, and a dead flag (norm ≤ 1e-6 × the layer's median norm, or 0)."""
    flat = weight.float().reshape(weight.shape[0], -1)
    l2 = flat.norm(dim=1)
    mean_abs = flat.abs().mean(dim=1)
    threshold = DEAD_RELATIVE_NORM * l2.median()
    dead = (l2 <= threshold) | (l2 == 0)
    return {"l2": l2, "mean_abs": mean_abs, "dead": dead.float()}


def kernel_tiles(weight: torch.Tensor) -> torch.Tensor:
    """What the filter grid draws per filter: all input channels when there are ≤ 3 (an RGB-like
    first layer), else their mean, giving (filters, channels, *kernel) with channels 1 or ≤ 3."""
    if weight.shape[1] <= 3:
        return weight.float()
    return weight.float().mean(dim=1, keepdim=True)
