"""Pure functions over a conv layer's output on the probe set, shaped (images, filters, *spatial)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def activation_stats(acts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-filter mean, max and fraction of positive values over all images and positions."""
    flat = acts.float().transpose(0, 1).reshape(acts.shape[1], -1)
    return {
        "act_mean": flat.mean(dim=1),
        "act_max": flat.max(dim=1).values,
        "act_frac_pos": (flat > 0).float().mean(dim=1),
    }


def downsample_maps(acts: torch.Tensor, max_size: int) -> torch.Tensor:
    """Average-pool each map so no spatial side exceeds `max_size` (what the grid can show anyway)."""
    spatial = acts.shape[2:]
    target = tuple(min(int(s), max_size) for s in spatial)
    if target == tuple(spatial):
        return acts.float()
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(spatial)]
    return pool(acts.float(), target)
