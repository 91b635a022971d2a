"""Spreading a per-layer cost over logs: layers take turns, so every log costs about the same.

Perturbation responses of a large model (by filters) and the random calibration sample of exact
ablation (by forward passes) both cost more than one log should pay for every layer; recorded in
turns, each layer still comes back every `len(turns)` logs.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional


def layer_turns(weights: Mapping[str, float], budget: Optional[float]) -> list[list[str]]:
    """Layers (model order kept within a turn) split into as few turns as keep each near `budget`
    of their `weights` — heaviest first, each to the lightest turn. One turn when all fit or
    budget is None; a layer heavier than the budget has a turn of its own at most."""
    total = sum(weights.values())
    if budget is None or total <= budget:
        return [list(weights)]
    count = min(math.ceil(total / budget), len(weights))
    turns: list[list[str]] = [[] for _ in range(count)]
    load = [0.0] * count
    for name in sorted(weights, key=lambda n: -weights[n]):
        lightest = load.index(min(load))
        turns[lightest].append(name)
        load[lightest] += weights[name]
    order = {name: i for i, name in enumerate(weights)}
    return [sorted(t, key=order.__getitem__) for t in turns if t]
