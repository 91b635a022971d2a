"""How each filter reacts to the user's own edits of the probe, and which filters react far more than
the rest of their layer (they detect what the edit removes)."""
from __future__ import annotations

from typing import Callable, Mapping

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
from tb_convviz.analysis.perturbation.measures import map_cosine, to_numpy

Counterfactual = Callable[[torch.Tensor], torch.Tensor]

ROBUST_Z_FLAG = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score: an outlier, not just a large value
# A relative change below this is no reaction. When an edit leaves most filters unchanged, their
# MAD is ~0 and specks of change score huge z, so a flagged filter must also move its mean
# |activation| by at least this much; and a shape–texture index shrinks to 0 when the two
# sensitivities sum to less.
MIN_CHANGE = 0.05


def robust_z(values: torch.Tensor) -> torch.Tensor:
    """Modified z-score 0.6745·(v − median)/MAD (Iglewicz & Hoaglin) over a layer's filters (F,) → (F,).

    When over half the filters tie (MAD = 0) the mean absolute deviation ×1.2533 stands in; when
    all are equal every score is 0.
    """
    med = values.median()
    dev = (values - med).abs()
    mad = dev.median()
    if mad > 0:
        return 0.6745 * (values - med) / mad
    meanad = dev.mean()
    if meanad > 0:
        return (values - med) / (1.253314 * meanad)
    return torch.zeros_like(values)


def counterfactual_plan(combined: CombinedPass, x: torch.Tensor, counterfactuals: Mapping[str, Counterfactual]) -> Finish:
    n = x.shape[0]
    combined.reference(CLEAN, x)

    def mean_abs_and_cosine(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
        clean = combined.maps(CLEAN)[name][image_index(first, len(out), n, out.device)]
        return torch.stack([out.abs().mean(-1), map_cosine(out, clean)], dim=1)  # (rows, 2, F)

    for cf_name, edit in counterfactuals.items():
        with torch.no_grad():
            edited = edit(x.clone())
        if not isinstance(edited, torch.Tensor) or edited.shape != x.shape:
            raise ValueError(f"counterfactual {cf_name!r} must return a tensor shaped {tuple(x.shape)}")
        combined.add(f"cf/{cf_name}", edited, mean_abs_and_cosine)

    def finish() -> Arrays:
        result: Arrays = {name: {} for name in combined.layers}
        for name in combined.layers:
            before = combined.maps(CLEAN)[name].abs().mean(dim=(0, 2))
            for cf_name in counterfactuals:
                key = f"cf/{cf_name}"
                after, cosine = combined.reduced(key)[name].mean(0)
                change = (after - before) / before.clamp_min(1e-30)
                z = robust_z(change.abs())
                result[name][key] = to_numpy(change)
                result[name][key + "/cosine"] = to_numpy(cosine)
                result[name][key + "/z"] = to_numpy(z)
                result[name][key + "/flag"] = to_numpy((z > ROBUST_Z_FLAG) & (change.abs() >= MIN_CHANGE))
        return result

    return finish


def counterfactual_sensitivity(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    counterfactuals: Mapping[str, Counterfactual],
    *,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """How each filter changes when the user's edit(batch) → batch is applied to the probe.

    Per counterfactual `c`: "cf/<c>" (F,) signed relative change of mean |activation|
    ((after − before)/before); "cf/<c>/cosine" (F,) cosine of maps, averaged over images;
    "cf/<c>/z" (F,) robust z-score of |cf/<c>| within the layer; "cf/<c>/flag" (F,) bool, z > 3.5
    and |cf/<c>| ≥ 0.05: the filter reacts far more than the layer's others, i.e. it detects what
    the edit removes.
    """
    x = prepare(model, x)
    return run_alone(model, layers, max_batch_bytes, lambda c: counterfactual_plan(c, x, counterfactuals))
