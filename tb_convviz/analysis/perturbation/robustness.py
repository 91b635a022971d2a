"""How stable each filter's map is under Gaussian noise and under FGSM/PGD attacks on the probe, with
intervals over the probe's images."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from tb_convviz.analysis.perturbation.engine import (
    CLEAN,
    DEFAULT_MAX_BATCH_BYTES,
    Arrays,
    CombinedPass,
    Finish,
    image_index,
    prepare,
    run_alone,
)
from tb_convviz.analysis.perturbation.measures import channel_stats, map_cosine, to_numpy, variant_means
from tb_convviz.analysis.perturbation.stimuli import adversarial_inputs
from tb_convviz.analysis.perturbation.uncertainty import mean_interval, ratio_interval

DEFAULT_SIGMAS = (0.1, 0.25, 0.5, 1.0)


def noise_plan(combined: CombinedPass, x: torch.Tensor, sigmas: Sequence[float], seed: int) -> Finish:
    n = x.shape[0]
    _, std = channel_stats(x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    # Drawn in float32 whatever the model's dtype: a float64 model meets the same noise as float32.
    noise = torch.randn((len(sigmas),) + tuple(x.shape), generator=gen, device=x.device, dtype=torch.float32).to(x.dtype)
    scale = torch.tensor(list(sigmas), device=x.device, dtype=x.dtype).reshape(-1, *([1] * x.dim()))
    combined.reference(CLEAN, x)

    def compare(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
        return map_cosine(out, combined.maps(CLEAN)[name][image_index(first, len(out), n, out.device)])

    combined.add("noise", (x.unsqueeze(0) + scale * std.unsqueeze(0) * noise).reshape(-1, *x.shape[1:]), compare)

    def finish() -> Arrays:
        # Each image's cosine averaged over the noise levels, (N, F): the stability column's mean
        # over levels, image by image, so its interval is over the probe's images.
        return {
            name: {
                "noise_sigmas": np.asarray(sigmas, dtype=np.float32),
                "stability": to_numpy(variant_means(cos, len(sigmas)).T),
                "stability_ci": mean_interval(cos.reshape(len(sigmas), n, -1).mean(0)),
            }
            for name, cos in combined.reduced("noise").items()
        }

    return finish


def noise_stability(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    seed: int = 0,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """Cosine of each filter's map under Gaussian noise with its clean map, averaged over images.

    Noise std is σ × the probe's per-channel std; drawn from a local torch.Generator seeded with
    `seed` (deterministic, global RNG untouched). Uncentred cosine, so a filter that mostly passes
    the image's mean (a DC kernel) stays near 1. x: (N, C, *spatial).
    Keys: "noise_sigmas" (S,); "stability" (F, S); "stability_ci" (F, 2) the 95% t interval of
    its mean over the levels, over the probe's images (each image with its own noise draws).
    """
    x = prepare(model, x)
    return run_alone(model, layers, max_batch_bytes, lambda c: noise_plan(c, x, sigmas, seed))


def adversarial_plan(
    combined: CombinedPass, x: torch.Tensor, y: Optional[torch.Tensor], epsilon: float, pgd_steps: int
) -> Finish:
    n = x.shape[0]
    x_fgsm, x_pgd = adversarial_inputs(combined.model, x, y, epsilon, pgd_steps)
    combined.reference(CLEAN, x)

    def squared_change(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
        clean = combined.maps(CLEAN)[name][image_index(first, len(out), n, out.device)]
        return ((out - clean) ** 2).sum(-1)

    combined.add("fgsm", x_fgsm, squared_change)
    combined.add("pgd", x_pgd, squared_change)

    def finish() -> Arrays:
        result: Arrays = {}
        for name in combined.layers:
            clean_energy = combined.maps(CLEAN)[name].square().sum(-1)  # (N, F) per image
            clean_norm = clean_energy.sum(0).sqrt().clamp_min(1e-30)
            result[name] = {"adv_epsilon": np.asarray(epsilon, dtype=np.float32)}
            for attack in ("fgsm", "pgd"):
                moved = combined.reduced(attack)[name]  # (N, F) per image
                result[name][attack] = to_numpy(moved.sum(0).sqrt() / clean_norm)
                # The change is √(Σ moved / Σ clean): an interval for the ratio, then its root.
                squared = ratio_interval(moved, clean_energy)
                result[name][attack + "_ci"] = np.sqrt(np.clip(squared, 0, None))
        return result

    return finish


def adversarial_change(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: Optional[torch.Tensor] = None,
    *,
    epsilon: float = 0.1,
    pgd_steps: int = 3,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """Relative activation change per filter under FGSM and an L∞ PGD attack (see `stimuli.adversarial_inputs`).

    Change is ‖Δa‖/‖a‖ over all images and positions. y: labels (N,); None attacks the model's
    own predictions. Keys: "adv_epsilon" () ; "fgsm" (F,); "pgd" (F,); "fgsm_ci", "pgd_ci" (F, 2)
    their 95% intervals over the probe's images (delta method on the ratio of squared norms).
    """
    x = prepare(model, x)
    return run_alone(model, layers, max_batch_bytes, lambda c: adversarial_plan(c, x, y, epsilon, pgd_steps))
