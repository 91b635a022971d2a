"""The default set of perturbation analyses, run every logged epoch, all in one CombinedPass."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from tb_convviz.analysis.perturbation.counterfactual import Counterfactual, counterfactual_plan
from tb_convviz.analysis.perturbation.engine import DEFAULT_MAX_BATCH_BYTES, Arrays, CombinedPass, Finish, prepare
from tb_convviz.analysis.perturbation.orientation import DEFAULT_FREQUENCIES, orientation_plan, rotation_plan
from tb_convviz.analysis.perturbation.robustness import DEFAULT_SIGMAS, adversarial_plan, noise_plan
from tb_convviz.analysis.perturbation.sequence import DEFAULT_SHIFTS, sequence_plan
from tb_convviz.analysis.perturbation.shape_texture import shape_texture_plan
from tb_convviz.analysis.perturbation.sharing import RowShare, run_shared
from tb_convviz.model.notices import notice


def perturbation_responses(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: Optional[torch.Tensor] = None,
    *,
    counterfactuals: Optional[Mapping[str, Counterfactual]] = None,
    angles: int = 12,
    noise_sigmas: Sequence[float] = DEFAULT_SIGMAS,
    epsilon: float = 0.1,
    pgd_steps: int = 3,
    phases: int = 2,
    rotate_probe: bool = False,
    shape_texture: bool = False,
    patch_size: Optional[int] = None,
    blur_sigma: Optional[float] = None,
    seed: int = 0,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    share: Optional[RowShare] = None,
) -> Optional[Arrays]:
    """The cheap default set, merged per layer: orientation (2-D inputs) or shift/reversal (1-D),
    noise stability, FGSM/PGD change, the given counterfactuals, and on request (`shape_texture=True`,
    2-D inputs; `patch_size`, `blur_sigma` as in shape_texture_sensitivity) the shape–texture
    sensitivities, all in one CombinedPass.

    Cheap because it runs every logged epoch: gratings in two quadrature phases (the energy of a
    linear filter over a quadrature pair does not depend on phase), the rotated-probe curve only
    on request (`rotate_probe=True`), since the grating curve already gives the tuning, and every
    variant in the same few passes (`max_batch_bytes`, see CombinedPass).

    x: (N, C, *spatial); y: labels (N,) or None (attacks then use the model's predictions).
    Orientation needs gratings, so 3-D inputs get none (a warning says so); shape–texture needs
    images, so other inputs skip it with a warning. The adversarial pair is skipped with a warning
    when the model does not return (N, classes) logits.
    Keys: see orientation_tuning, rotation_response, sequence_symmetry, noise_stability,
    adversarial_change, counterfactual_sensitivity and shape_texture_sensitivity; the same values
    as each run alone. With `share` (several processes, see sharing.run_shared) only the assembling
    process gets the result; the others return None.
    """
    x = prepare(model, x)
    combined = CombinedPass(model, layers, max_batch_bytes)
    finishes: list[Finish] = []
    if x.dim() == 4:
        finishes.append(orientation_plan(combined, x, angles, DEFAULT_FREQUENCIES, phases))
        if rotate_probe:
            finishes.append(rotation_plan(combined, x, angles))
    elif x.dim() == 3:
        finishes.append(sequence_plan(combined, x, DEFAULT_SHIFTS))
    else:
        notice(f"perturbation_responses: no orientation analysis for {x.dim() - 2}-D inputs")
    if shape_texture and x.dim() == 4:
        finishes.append(shape_texture_plan(combined, x, patch_size, blur_sigma, seed))
    elif shape_texture:
        notice(f"perturbation_responses: shape_texture needs 2-D images, skipped for {x.dim() - 2}-D inputs")
    finishes.append(noise_plan(combined, x, noise_sigmas, seed))
    try:
        finishes.append(adversarial_plan(combined, x, y, epsilon, pgd_steps))
    except ValueError as err:
        notice(f"perturbation_responses: adversarial analysis skipped: {err}")
    if counterfactuals:
        finishes.append(counterfactual_plan(combined, x, counterfactuals))
    if share is None:
        combined.run()
    elif not run_shared(combined, share):
        return None
    parts = [finish() for finish in finishes]
    return {name: {k: v for part in parts for k, v in part[name].items()} for name in layers}
