"""Does each 2-D filter use the probe's global shape or its local texture? Two counterfactuals say:
a patch shuffle keeps texture and destroys shape, a blur keeps shape and removes texture."""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from tb_convviz.analysis.perturbation.counterfactual import MIN_CHANGE
from tb_convviz.analysis.perturbation.engine import (
    BLANK,
    CLEAN,
    DEFAULT_MAX_BATCH_BYTES,
    Arrays,
    CombinedPass,
    Finish,
    blank_reference,
    needs_images,
    prepare,
    run_alone,
)
from tb_convviz.analysis.perturbation.measures import driven_energy, to_numpy
from tb_convviz.analysis.perturbation.stimuli import gaussian_blur, shuffle_patches


def _rms_change(energy: torch.Tensor, clean_energy: torch.Tensor) -> torch.Tensor:
    """|r − r₀| / max(r, r₀) of the RMS responses r = √energy (F,): in [0, 1], 0 when both are 0."""
    r, r0 = energy.sqrt(), clean_energy.sqrt()
    top = torch.maximum(r, r0)
    return torch.where(top > 0, (r - r0).abs() / top.clamp_min(1e-30), torch.zeros_like(top))


def shape_texture_index(shape: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
    """(shape − texture) / max(shape + texture, MIN_CHANGE) per filter (F,) → (F,) in [−1, 1].

    +1: only shape moves the filter, −1: only texture. The floor keeps a filter that neither
    transform moves (both sensitivities ~0, where the plain ratio is noise over noise) near 0.
    """
    return (shape - texture) / (shape + texture).clamp_min(MIN_CHANGE)


def shape_texture_plan(
    combined: CombinedPass, x: torch.Tensor, patch_size: Optional[int], blur_sigma: Optional[float], seed: int
) -> Finish:
    needs_images("shape_texture_sensitivity", x)
    side = min(x.shape[-2:])
    patch_size = max(1, side // 4) if patch_size is None else patch_size
    blur_sigma = side / 32 if blur_sigma is None else blur_sigma
    shuffled = shuffle_patches(x, patch_size, torch.Generator().manual_seed(seed))
    blurred = gaussian_blur(x, blur_sigma)
    combined.reference(CLEAN, x)
    blank_reference(combined, x)

    def energy(name: str, out: torch.Tensor, _first: int) -> torch.Tensor:
        return driven_energy(out, combined.maps(BLANK)[name])

    combined.add("st/shuffled", shuffled, energy)
    combined.add("st/blurred", blurred, energy)

    def finish() -> Arrays:
        result: Arrays = {}
        for name in combined.layers:
            clean = driven_energy(combined.maps(CLEAN)[name], combined.maps(BLANK)[name]).mean(0)
            shape = _rms_change(combined.reduced("st/shuffled")[name].mean(0), clean)
            texture = _rms_change(combined.reduced("st/blurred")[name].mean(0), clean)
            result[name] = {
                "st/shape_sensitivity": to_numpy(shape),
                "st/texture_sensitivity": to_numpy(texture),
                "st/index": to_numpy(shape_texture_index(shape, texture)),
            }
        return result

    return finish


def shape_texture_sensitivity(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    patch_size: Optional[int] = None,
    blur_sigma: Optional[float] = None,
    seed: int = 0,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """Does each filter use the probe's global shape or its local texture? Two counterfactuals say.

    Patch shuffling (`shuffle_patches`, patch_size default ¼ of the shorter side, seeded by `seed`)
    keeps texture and destroys shape; a Gaussian blur (`gaussian_blur`, blur_sigma default 1/32 of
    the shorter side, in pixels) keeps shape and removes texture. A filter's response is its RMS
    driven response over images and positions (a − a(blank), as for orientation, so bias and DC
    do not count; position-free, since shuffling moves everything). x: (N, C, H, W).

    Keys, each (F,): "st/shape_sensitivity" = |r_shuffled − r| / max(r_shuffled, r) in [0, 1];
    "st/texture_sensitivity" the same under blur; "st/index" = `shape_texture_index` in [−1, 1]
    (+1 shape only, −1 texture only, ~0 for neither or both). No histogram is stored: a layer's
    distribution of the index is summarised on read.
    """
    x = prepare(model, x)
    return run_alone(model, layers, max_batch_bytes, lambda c: shape_texture_plan(c, x, patch_size, blur_sigma, seed))
