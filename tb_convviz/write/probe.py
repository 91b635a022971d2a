"""The fixed probe batch every epoch is measured on: validated once, reused as is."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch


@dataclass(frozen=True)
class Probe:
    """Images (N, C, *spatial) with 1–3 spatial dims, and optional integer labels (N,)."""

    images: torch.Tensor
    labels: Optional[torch.Tensor]

    @property
    def n(self) -> int:
        return int(self.images.shape[0])


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"probe: {what} must be a torch.Tensor or numpy array, not {type(x).__name__}")


def make_probe(probe: Any) -> Optional[Probe]:
    """Accept `images` or `(images, labels)`; raise ValueError/TypeError naming what is wrong."""
    if probe is None:
        return None
    labels = None
    if isinstance(probe, (tuple, list)):
        if len(probe) != 2:
            raise ValueError(f"probe: expected images or (images, labels), got a sequence of {len(probe)} items")
        probe, labels = probe
    images = _as_tensor(probe, "images")
    if not images.is_floating_point():
        raise ValueError(f"probe: images must be floating point, got {images.dtype}")
    if images.dim() not in (3, 4, 5):
        raise ValueError(
            "probe: images must be shaped (N, C, L), (N, C, H, W) or (N, C, D, H, W); "
            f"got shape {tuple(images.shape)}"
        )
    if images.shape[0] < 1:
        raise ValueError("probe: images hold no example (N = 0)")
    if not torch.isfinite(images).all():
        raise ValueError("probe: images contain NaN or infinite values")
    if labels is not None:
        labels = _as_tensor(labels, "labels")
        if labels.is_floating_point() or labels.is_complex() or labels.dim() != 1:
            raise ValueError(f"probe: labels must be a 1-D integer array, got {labels.dtype} {tuple(labels.shape)}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"probe: {labels.shape[0]} labels for {images.shape[0]} images")
        labels = labels.long().cpu()
    return Probe(images.float().cpu().contiguous(), labels)
