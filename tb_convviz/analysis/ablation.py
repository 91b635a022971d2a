"""Exact filter ablation: the model's logits with each output channel of a conv layer zeroed in turn.

Zeroing one channel only changes what lies downstream of that conv. `FilterAblation` traces the
model once with torch.fx and runs it once keeping every intermediate value; then, for a batch of
filters, it replays only the graph below the conv (ablation_replay: its planner chooses, its
executor runs: channel k alone up to the first op that mixes channels, that op as its cached
output plus channel k's contribution, the rest on stacked copies of the probe). Models fx cannot
trace (data-dependent control flow, ...) fall back to forward hooks: a full forward per batch of
filters, stacked along the batch. All paths are exact, not approximations; they match one forward
per filter.
"""
from __future__ import annotations

import threading
import weakref
from typing import Iterable, Iterator, Literal, Mapping, Optional, Sequence

import torch
import torch.fx as fx
from torch import nn

from tb_convviz.analysis.ablation_replay.executor import replay
from tb_convviz.analysis.ablation_replay.planner import ReplayPlan, plan_replay
from tb_convviz.analysis.ablation_replay.traced import AblationPlanError, TracedProbe, logits_of
from tb_convviz.model.notices import notice
from tb_convviz.model.capture import as_model_input, class_scores, run_with_hooks
from tb_convviz.model.layers import unwrap

Method = Literal["auto", "fx", "hooks"]

__all__ = ["AblationPlanError", "FilterAblation", "Method", "ablated_logits"]

# Which replay of a layer reproduced the clean logits, per traced graph (one per model object and
# structure: `model.tracing`), layer and probe shape: True the channel-wise one, False the general
# one, None neither (hooks). What the check catches — an in-place op on a cached value, a batch size
# captured elsewhere — is the graph's, not the weights', so a run's later logs reuse the answer
# instead of replaying every layer unablated once more per log (a third of a ResNet-50's impact).
_verified: "weakref.WeakKeyDictionary[fx.GraphModule, dict[tuple[str, tuple[int, ...]], Optional[bool]]]" = (
    weakref.WeakKeyDictionary())
_verified_lock = threading.Lock()


class FilterAblation:
    """Exact ablation of chosen filters of a model's conv layers on one probe x (N, C, *spatial).

    method "fx" replays only the downstream graph and raises if it cannot; "hooks" runs full
    forwards; "auto" uses fx and falls back to hooks, with a warning, for the model or layer that
    fx cannot handle. Within fx, a layer's plan is checked once, before its first pass: replayed
    unablated it must reproduce the clean logits, else the general replay (every downstream node
    on stacked copies) is used, with a warning.
    `max_batch` bounds memory: a pass holds at most as many elements per stacked value as
    max_batch probe images of the model's widest activation (max_batch // N filters per pass when
    everything downstream is replayed whole, more when only channel blocks are). The default
    keeps stacked values small enough for the allocator to reuse, which is faster on CPU than
    larger passes; raise it on a GPU.
    `clean` holds the clean logits (N, classes).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, *, method: Method = "auto", max_batch: int = 64):
        if method not in ("auto", "fx", "hooks"):
            raise ValueError(f"method must be 'auto', 'fx' or 'hooks', got {method!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
        self.model = unwrap(model)
        self.x = as_model_input(self.model, x.detach())
        self.n = self.x.shape[0]
        self.method, self.max_batch = method, max_batch
        self._traced: Optional[TracedProbe] = None
        self._plans: dict[str, Optional[ReplayPlan]] = {}
        self._checked: set[str] = set()
        with torch.no_grad():
            if method != "hooks":
                try:
                    self._traced = TracedProbe(self.model, self.x)
                except Exception as err:  # fx raises many kinds (TraceError, TypeError, ...) on untraceable code
                    if method == "fx":
                        raise
                    notice(f"ablation: torch.fx cannot trace the model ({type(err).__name__}: {err}); "
                           "using forward hooks (one full forward per filter batch)")
            self.clean = self._traced.clean if self._traced is not None else logits_of(class_scores(self.model(self.x)), self.n)

    def filters(self, layer: str) -> int:
        """Number of output channels (filters) of `layer`."""
        return int(self.model.get_submodule(layer).out_channels)

    def cost(self, layer: str) -> float:
        """Estimated cost of ablating one filter of `layer`, in forward passes of the probe: the FLOPs
        of its replay plan over those of a forward (1 for the hooks fallback). Timing-free."""
        plan = self._plan(layer)
        return 1.0 if plan is None or self._traced is None else plan.flops / max(self._traced.forward_flops, 1.0)

    def check_cost(self, layer: str) -> float:
        """What making sure of `layer`'s replay costs before its first pass, in forward passes of the
        probe (`_check`'s unablated copies); nothing once this graph's replay of it was checked, at
        this log or an earlier one, or for hooks. Timing-free, like `cost`."""
        if self._traced is None or layer in self._checked:
            return 0.0
        plan = self._plan(layer)
        if plan is None:
            return 0.0
        if self._verified(layer)[0]:
            return 0.0
        return len(_check_copies(plan)) * self.cost(layer)

    def _verified(self, layer: str) -> tuple[bool, Optional[bool]]:
        """(whether an earlier FilterAblation of this graph and probe shape checked `layer`, what it
        settled on: see `_verified`)."""
        assert self._traced is not None
        key = (layer, tuple(self.x.shape))
        with _verified_lock:
            known = _verified.get(self._traced.gm, {})
            return key in known, known.get(key)

    def passes(self, layer: str, filters: Optional[Sequence[int]] = None) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Per pass: (the filters it ablated, their logits (len, N, classes)), filter i's row with
        filter i alone zeroed; `filters` (default all) in the order given. Each pass runs under
        no_grad, so what the caller does between passes keeps its own grad mode."""
        count = self.filters(layer)
        chosen = list(range(count)) if filters is None else [int(f) for f in filters]
        bad = [f for f in chosen if not 0 <= f < count]
        if bad:
            raise ValueError(f"filters: {bad[:5]} out of range for layer {layer!r} with {count} filters")
        if not chosen:
            return  # nothing to ablate: no check to pay for either
        plan = self._checked_plan(layer)
        if plan is None:
            per_pass = max(1, self.max_batch // self.n)
        else:
            per_pass = max(1, int(self.max_batch * self._traced.widest // (self.n * plan.peak)))
        for fs in _chunks(chosen, per_pass):
            with torch.no_grad():
                if plan is None:
                    logits = _hooked_ablation(self.model, layer, self.x, fs)
                else:
                    logits = replay(self._traced, plan, fs)
            yield fs, logits.reshape(len(fs), self.n, -1)

    def _plan(self, layer: str) -> Optional[ReplayPlan]:
        """The fx plan of `layer` (fast where the model allows), or None for the hooks fallback."""
        if layer not in self._plans:
            self._plans[layer] = None
            if self._traced is not None:
                try:
                    self._plans[layer] = plan_replay(self._traced, layer, fast=self._traced.fast_ok)
                except AblationPlanError as err:
                    self._fallback(err)
        return self._plans[layer]

    def _checked_plan(self, layer: str) -> Optional[ReplayPlan]:
        """The plan, once replaying it unablated has reproduced the clean logits; a fast plan that
        does not gives way to the general one, a general one that does not to hooks."""
        plan = self._plan(layer)
        if plan is None or layer in self._checked:
            return plan
        traced = self._traced
        assert traced is not None
        found, outcome = self._verified(layer)
        if found:  # the first log said which replay works, and noticed any fallback
            if outcome is None and self.method == "fx":
                raise AblationPlanError(f"replaying the graph below {layer!r} failed at an earlier log")
            if outcome is None:
                plan = None
            elif outcome != plan.fast:
                plan = plan_replay(traced, layer, fast=outcome)
        else:
            plan = self._verify(layer, plan)
            with _verified_lock:
                _verified.setdefault(traced.gm, {})[(layer, tuple(self.x.shape))] = None if plan is None else plan.fast
        self._plans[layer] = plan
        self._checked.add(layer)
        return plan

    def _verify(self, layer: str, plan: ReplayPlan) -> Optional[ReplayPlan]:
        """The first plan, channel-wise then general, whose unablated replay reproduces the clean
        logits; None (hooks) when neither does."""
        traced = self._traced
        assert traced is not None
        with torch.no_grad():
            problem = self._check(plan)
            if problem is not None and plan.fast:
                notice(f"ablation: the channel-wise replay below {layer!r} failed ({problem}); "
                       "using the general replay")
                plan = plan_replay(traced, layer, fast=False)
                problem = self._check(plan)
        if problem is not None:
            self._fallback(AblationPlanError(f"replaying the graph below {layer!r} failed ({problem})"))
            return None
        return plan

    def _check(self, plan: ReplayPlan) -> Optional[str]:
        """None if two unablated stacked copies replay to the clean logits, else what went wrong.

        If they do not, some value the graph reads is not what the cache holds (an in-place op on
        a cached tensor, a batch size captured elsewhere), and the plan is not exact.
        """
        traced = self._traced
        assert traced is not None
        copies = _check_copies(plan)
        try:
            check = replay(traced, plan, copies, identity=True)
        except Exception as err:  # noqa: BLE001 - any failure of a plan means "use the next one"
            return f"{type(err).__name__}: {err}"
        scale = max(1.0, float(traced.clean.abs().max()))
        if torch.allclose(check, traced.clean.repeat(len(copies), 1), rtol=1e-4, atol=1e-5 * scale):
            return None
        return "it does not reproduce the clean logits"

    def _fallback(self, err: AblationPlanError) -> None:
        if self.method == "fx":
            raise err
        notice(f"ablation: {err}; using forward hooks for it")


def _check_copies(plan: ReplayPlan) -> list[int]:
    """The filters whose blocks an unablated check replays: the first and the last channel, two
    stacked copies (a batch size captured elsewhere shows only when copies are stacked)."""
    return sorted({0, plan.channels - 1})


def _chunks(items: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _hooked_ablation(model: nn.Module, layer: str, x: torch.Tensor, filters: Sequence[int]) -> torch.Tensor:
    """Logits (len(filters)·N, classes) from one full forward of stacked copies, a hook zeroing
    channel filters[i] in copy i."""
    module = model.get_submodule(layer)
    n = x.shape[0]
    ks = torch.as_tensor(list(filters), dtype=torch.long, device=x.device)

    def zero(_name: str, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out.view(len(ks), n, *out.shape[1:])[torch.arange(len(ks), device=x.device), :, ks] = 0
        return out

    y, _ = run_with_hooks(model, {layer: module}, x.repeat(len(ks), *([1] * (x.dim() - 1))), record=False, edit=zero)
    return logits_of(y, len(ks) * n)


def ablated_logits(
    model: nn.Module,
    layers: Sequence[str],
    x: torch.Tensor,
    *,
    filters: Optional[Mapping[str, Sequence[int]]] = None,
    method: Method = "auto",
    max_batch: int = 64,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clean logits (N, classes) and, per conv layer name, logits (F, N, classes) with filter f zeroed.

    `filters` picks which filters of a layer to ablate, rows in the order given (a layer it does
    not name: all of them), e.g. a rank's shard under DDP. A filter is zeroed at the conv's output
    (every call, if the module is reused). See FilterAblation for method and max_batch.
    """
    ablation = FilterAblation(model, x, method=method, max_batch=max_batch)
    result = {}
    for layer in layers:
        chosen = None if filters is None or layer not in filters else filters[layer]
        parts = [logits for _, logits in ablation.passes(layer, chosen)]
        result[layer] = torch.cat(parts) if parts else ablation.clean.new_empty((0, *ablation.clean.shape))
    return ablation.clean, result
