"""Per-filter metrics defined the way a user defines them in a training script (outside the
package), for tests/test_metrics.py, the DDP job, `log-checkpoints --metrics` and the browser."""
from __future__ import annotations

import numpy as np
import torch

from tb_convviz import FilterMetric, MetricContext


def hoyer(ctx: MetricContext) -> torch.Tensor:
    """Hoyer sparsity of each filter's maps, mean over the probe: 0 every position alike, 1 one position."""
    a = ctx.activations.flatten(2).abs()
    n = a.shape[-1] ** 0.5
    return ((n - a.sum(-1) / a.norm(dim=-1).clamp_min(1e-12)) / (n - 1)).mean(0)


def hoyer_reference(acts: np.ndarray) -> np.ndarray:
    """The same number in plain numpy, from activations (N, F, *spatial)."""
    a = np.abs(acts.reshape(acts.shape[0], acts.shape[1], -1)).astype(np.float64)
    n = np.sqrt(a.shape[-1])
    return ((n - a.sum(-1) / np.maximum(np.linalg.norm(a, axis=-1), 1e-12)) / (n - 1)).mean(0)


def brightness_gain(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """A perturbation response of the user's own, through `layer_output`: mean |output| on the
    probe made twice as bright, over mean |output| on the probe, and the same for half as bright."""
    clean = ctx.activations.abs().flatten(2).mean((0, 2)).clamp_min(1e-12)
    images = ctx.images
    return {
        "up": ctx.layer_output(images * 2).abs().flatten(2).mean((0, 2)) / clean,
        "down": ctx.layer_output(images * 0.5).abs().flatten(2).mean((0, 2)) / clean,
    }


HOYER = FilterMetric("hoyer", hoyer, label="Hoyer sparsity", description="0 = every position active, 1 = one position",
                     better="higher")
GAIN = FilterMetric("gain", brightness_gain, label="Brightness gain", description="Response to a brighter probe",
                    columns={"up": {"label": "Gain ×2", "description": "mean |output| on the probe ×2 over the probe's"},
                             "down": {"label": "Gain ×0.5"}})
METRICS = [HOYER, GAIN]
