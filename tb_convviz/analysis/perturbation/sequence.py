"""Symmetry of 1-D filters: does a filter's map follow a circular shift or a time reversal of the input?"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from tb_convviz.analysis.perturbation.engine import (
    CLEAN,
    DEFAULT_MAX_BATCH_BYTES,
    Arrays,
    CombinedPass,
    Finish,
    Reducer,
    image_index,
    prepare,
    run_alone,
)
from tb_convviz.analysis.perturbation.measures import map_cosine, to_numpy

DEFAULT_SHIFTS = (0.125, 0.25, 0.5)


def sequence_plan(combined: CombinedPass, x: torch.Tensor, shifts: Sequence[float]) -> Finish:
    if x.dim() != 3:
        raise ValueError(f"sequence_symmetry: needs 1-D sequences (N, C, L), got shape {tuple(x.shape)}")
    n, length = x.shape[0], x.shape[-1]
    combined.reference(CLEAN, x)
    steps = [int(round(s * length)) for s in shifts]

    def follows(move: Callable[[torch.Tensor], torch.Tensor]) -> Reducer:
        """Cosine of a layer's map on the moved input with the same move applied to its clean map."""

        def compare(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
            clean = combined.maps(CLEAN)[name][image_index(first, len(out), n, out.device)]
            return map_cosine(out, move(clean))

        return compare

    def rolled(step: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The input's roll as its map sees it: the same fraction of the map's own (maybe strided) length."""
        return lambda maps: torch.roll(maps, int(round(step * maps.shape[-1] / length)), dims=-1)

    for k, step in enumerate(steps):
        combined.add(f"shift/{k}", torch.roll(x, step, dims=-1), follows(rolled(step)))
    combined.add("reversal", torch.flip(x, dims=[-1]), follows(lambda m: torch.flip(m, dims=[-1])))

    def finish() -> Arrays:
        result: Arrays = {}
        for name in combined.layers:
            shift = torch.stack([combined.reduced(f"shift/{k}")[name].mean(0) for k in range(len(steps))])  # (S, F)
            result[name] = {
                "shift_fractions": np.asarray(shifts, dtype=np.float32),
                "shift": to_numpy(shift.T),
                "reversal": to_numpy(combined.reduced("reversal")[name].mean(0)),
            }
        return result

    return finish


def sequence_symmetry(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    shifts: Sequence[float] = DEFAULT_SHIFTS,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """For 1-D inputs (N, C, L): does each filter's map follow a circular shift or a time reversal of the input?

    "shift" (F, S): cosine of a(roll(x, s)) with roll(a(x), s·L_out/L) — 1 for a shift-equivariant
    filter, lower where padding or stride break it; shifts are fractions of L ("shift_fractions" (S,)).
    "reversal" (F,): cosine of a(flip(x)) with flip(a(x)) — 1 for a palindromic kernel, −1 for an
    antisymmetric one, near 0 for a direction-selective one. Cosines are averaged over images.
    """
    x = prepare(model, x)
    return run_alone(model, layers, max_batch_bytes, lambda c: sequence_plan(c, x, shifts))
