"""Pure functions over a conv layer's output on the probe set, shaped (images, filters, *spatial)."""
from __future__ import annotations

import numpy as np
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


def map_resolution(
    shapes: list[tuple[int, ...]], images: int, max_size: int, budget_bytes: int
) -> tuple[int, int]:
    """How many probe images and what side to keep maps at, so all layers fit `budget_bytes`.

    shapes: each layer's (filters, *spatial). Sides shrink first (down to 8, still enough to see
    where a filter fires), then images, then sides below 8; one image at side 1 always fits.
    Each kept map costs its values plus 8 bytes of q8 scale.
    """

    def cost(n: int, side: int) -> int:
        return sum(n * f * (int(np.prod([min(d, side) for d in spatial])) + 8) for f, *spatial in shapes)

    floor = min(8, max_size)
    candidates = [(images, s) for s in range(max_size, floor - 1, -1)]
    candidates += [(n, floor) for n in range(images - 1, 0, -1)]
    candidates += [(1, s) for s in range(floor - 1, 0, -1)]
    return next(((n, s) for n, s in candidates if cost(n, s) <= budget_bytes), (1, 1))
