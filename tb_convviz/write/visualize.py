"""Feature visualization in a log: the `feature_vis` option, which filters each log visualises, and
what that costs.

Optimising an image costs `steps` forward and backward passes of one image through the model up to
the filter's layer, so a log can afford only some filters: by default a budget in forward-equivalents
of the probe (`budget`) is spent on the filters that matter most — the largest impact where impact
was measured this log, else the largest drift since the first log — of the layers whose turn it is.
Layers take turns as they do at perturbation responses (`turns.layer_turns`), weighed by what
`VISIT_FILTERS` of their filters cost, so a deep layer (a filter of a ResNet-50's last block costs
35 times one of its first conv) has its turn too. `"all"` or `{layer: [filters]}` choose every
filter, or those listed, at every log.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from tb_convviz.analysis.feature_vis import DEFAULT_BATCH, DEFAULT_LR, DEFAULT_STEPS, Size
from tb_convviz.analysis.turns import layer_turns
from tb_convviz.model.layers import CONV_TYPES

# Forward-equivalents of the probe one log may spend on the default choice of filters: with 128
# steps and a 32-image probe at the probe's own size, a filter of a ResNet-50's last block is
# estimated at 24 (`filter_cost`) and measured 37-38 (bench/feature_vis.py), one of its first conv
# at 0.7; the budget fits the former as measured.
DEFAULT_BUDGET = 40.0
# One optimisation step of one image, in forward passes of that image as far as its layer: a
# forward and an input-gradient backward would be 2 by FLOPs, but on a CPU a few images at a time run
# well below the probe pass's efficiency, with the transforms on top: about 6 measured on a
# ResNet-50 (bench/feature_vis.py). The first visualising log starts from this; every later one
# scales its estimates by what the earlier ones measured (`calibrated`).
PASSES_PER_STEP = 6.0
# The calibration factor stays within these bounds, and moves halfway (geometrically) to what each
# log measured: one log's time is noisy (its probe pass, the unit, is one short measurement), and one
# disturbed log must neither starve nor flood the next.
CALIBRATION_BOUNDS = (0.5, 2.0)
# Filters of each layer a turn is sized for: every layer of a turn gets at least this many.
VISIT_FILTERS = 2
ALL = "all"

FilterChoice = Union[None, str, Mapping[str, tuple[int, ...]]]


@dataclass(frozen=True)
class FeatureVisSettings:
    """The parsed `feature_vis` argument. `filters`: None (the budget's choice), "all", or
    {layer: filter indices}."""

    filters: FilterChoice = None
    budget: float = DEFAULT_BUDGET
    size: Size = None
    steps: int = DEFAULT_STEPS
    seed: int = 0
    lr: float = DEFAULT_LR
    batch: int = DEFAULT_BATCH

    def analysis_options(self) -> dict[str, Any]:
        """Keyword options of `feature_visualization`."""
        return {"size": self.size, "steps": self.steps, "seed": self.seed, "lr": self.lr, "batch": self.batch}


def _bad(message: str) -> ValueError:
    return ValueError(f"feature_vis: {message}")


def feature_vis_settings(value: Any) -> Optional[FeatureVisSettings]:
    """The settings `ConvViz(feature_vis=...)` asks for (None: off); ValueError naming `feature_vis`
    and the bad key. True: the defaults; "all": every filter; a dict: any of filters, budget, size,
    steps, seed, lr, batch."""
    if value is False or value is None:
        return None
    if value is True:
        return FeatureVisSettings()
    if value == ALL:
        return FeatureVisSettings(filters=ALL)
    if not isinstance(value, Mapping):
        raise ValueError(f'feature_vis must be True, False, "all" or a dict of options, got {value!r}')
    known = set(FeatureVisSettings.__dataclass_fields__)
    unknown = sorted(set(value) - known)
    if unknown:
        raise _bad(f"unknown options {unknown}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    filters = value.get("filters")
    if filters is None or filters == ALL:
        out["filters"] = filters
    elif isinstance(filters, Mapping) and all(isinstance(k, str) for k in filters):
        chosen = {}
        for layer, idx in filters.items():
            if isinstance(idx, (str, bytes)) or not isinstance(idx, Sequence) or not all(
                    isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 0 for i in idx):
                raise _bad(f"filters[{layer!r}] must be a list of filter indices, got {idx!r}")
            chosen[layer] = tuple(int(i) for i in idx)
        out["filters"] = chosen
    else:
        raise _bad(f'filters must be None, "all" or {{layer: [filter indices]}}, got {filters!r}')
    for key in ("steps", "batch"):
        if key in value:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise _bad(f"{key} must be a positive integer, got {v!r}")
            out[key] = int(v)
    if "seed" in value:
        if isinstance(value["seed"], bool) or not isinstance(value["seed"], (int, np.integer)):
            raise _bad(f"seed must be an integer, got {value['seed']!r}")
        out["seed"] = int(value["seed"])
    for key in ("budget", "lr"):
        if key in value:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise _bad(f"{key} must be a positive number, got {v!r}")
            out[key] = float(v)
    if "size" in value and value["size"] is not None:
        size = value["size"]
        sides = [size] if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
        if not isinstance(sides, Sequence) or not sides or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 4 for s in sides):
            raise _bad(f"size must be a side of at least 4 or a list of sides, got {size!r}")
        out["size"] = int(size) if len(sides) == 1 and not isinstance(size, Sequence) else tuple(int(s) for s in sides)
    return FeatureVisSettings(**out)


def check_choice(settings: FeatureVisSettings, filters: Mapping[str, int]) -> None:
    """At the first log: a listed layer must be a logged conv, a listed filter one of its filters.
    `filters`: {layer: its filter count}."""
    if not isinstance(settings.filters, Mapping):
        return
    for layer, idx in settings.filters.items():
        if layer not in filters:
            raise _bad(f"filters names {layer!r}, which is not a logged conv layer; they are {sorted(filters)}")
        bad = [i for i in idx if i >= filters[layer]]
        if bad:
            raise _bad(f"filters[{layer!r}] lists {bad}, but the layer has {filters[layer]} filters")


def prefix_flops(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """{conv name: the share of the model's conv and linear FLOPs run until its output exists},
    from one hooked pass of one probe image: the forward and backward passes of a visualisation
    stop at its layer."""
    counted: list[tuple[str, float]] = []
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
            if isinstance(module, nn.Linear):
                flops = out.numel() * module.in_features
            else:
                flops = out.numel() * module.weight[0].numel() if not module.transposed else inputs[0].numel() * module.weight[0].numel()
            counted.append((name, float(flops)))

        return hook

    try:
        for name, module in model.named_modules():
            if isinstance(module, (*CONV_TYPES, nn.Linear)):
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    total = sum(f for _, f in counted) or 1.0
    shares, running = {}, 0.0
    for name, flops in counted:
        running += flops
        shares.setdefault(name, running / total)
    return shares


def filter_cost(settings: FeatureVisSettings, share: float, probe_n: int, pixels_ratio: float) -> float:
    """Forward-equivalents of the probe that visualising one filter costs: `steps` forward and
    input-gradient passes of one image (`pixels_ratio` × a probe image's size) to a layer at
    `share` of the model's FLOPs."""
    return settings.steps * PASSES_PER_STEP * share * pixels_ratio / max(probe_n, 1)


def calibrated(measured_fe: float, estimated_fe: float, previous: float) -> float:
    """The factor later estimates are multiplied by: halfway (geometrically) from `previous` to what
    a log's visualisations cost (forward-equivalents measured against its own probe pass) over what
    they were estimated to cost with `previous`, within CALIBRATION_BOUNDS. Without a measurement (a
    log that visualised nothing), halfway back to 1, so that a high factor cannot starve every log."""
    lo, hi = CALIBRATION_BOUNDS
    if not estimated_fe > 0 or not measured_fe > 0:
        return min(hi, max(lo, math.sqrt(previous)))
    return min(hi, max(lo, math.sqrt(previous * previous * measured_fe / estimated_fe)))


def visit_turns(settings: FeatureVisSettings, costs: Mapping[str, float]) -> list[list[str]]:
    """Layers (model order within a turn) split into turns that each cost about `budget` when
    every layer of the turn visualises `VISIT_FILTERS` filters (`turns.layer_turns`)."""
    return layer_turns({name: cost * VISIT_FILTERS for name, cost in costs.items()}, settings.budget)


def chosen_filters(settings: FeatureVisSettings, counts: Mapping[str, int], turn: Sequence[str],
                   costs: Mapping[str, float], scores: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
    """{layer: filter indices} this log visualises. counts: {layer: filters} of every logged layer;
    turn: the layers whose turn it is; costs: {layer: forward-equivalents a filter}; scores:
    {layer: (F,) how much each filter matters, larger first}.

    The budget is spent in rounds: each round gives each layer of the turn, in model order, its
    next filter by score while that still fits, so cheap early layers do not take it all."""
    if settings.filters == ALL:
        return {layer: list(range(n)) for layer, n in counts.items()}
    if isinstance(settings.filters, Mapping):
        return {layer: list(idx) for layer, idx in settings.filters.items() if idx}
    ranked = {layer: list(np.argsort(-np.nan_to_num(scores[layer], nan=-np.inf), kind="stable")) if layer in scores
              else list(range(counts[layer])) for layer in turn}
    chosen: dict[str, list[int]] = {layer: [] for layer in turn}
    left = settings.budget
    while True:
        added = False
        for layer in turn:
            if len(chosen[layer]) < len(ranked[layer]) and costs[layer] <= left:
                chosen[layer].append(int(ranked[layer][len(chosen[layer])]))
                left -= costs[layer]
                added = True
        if not added:
            break
    return {layer: sorted(idx) for layer, idx in chosen.items() if idx}
