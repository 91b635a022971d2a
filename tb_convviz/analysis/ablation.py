"""Exact filter ablation: the model's logits with each output channel of a conv layer zeroed in turn.

Zeroing one channel only changes what lies downstream of that conv. The fx engine traces the
model once, runs it once keeping every intermediate value, then for a batch of k filters
re-executes only the graph nodes downstream of the conv on k stacked copies of the probe (copy i
with filter i zeroed), reading everything else from the cache. Models fx cannot trace (data-
dependent control flow, ...) fall back to forward hooks: a full forward per k filters, again
stacked along the batch. Both are exact, not approximations; they match one forward per filter.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Literal, Sequence

import torch
import torch.fx as fx
from torch import nn

from tb_convviz.capture import as_model_input, run_with_hooks
from tb_convviz.layers import unwrap

Method = Literal["auto", "fx", "hooks"]


class AblationPlanError(RuntimeError):
    """The fx engine cannot ablate this layer exactly (not traced as a node, or a replay mismatch)."""


def _logits(out: Any, n: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
        raise ValueError("ablation: the model must return class logits shaped (N, classes)")
    return out


def _channel_mask(filters: Sequence[int], n: int, channels: int, out_dims: int, like: torch.Tensor) -> torch.Tensor:
    """(k·N, channels, 1, ...) ones with channel filters[i] zeroed in the i-th copy of the batch."""
    mask = torch.ones(len(filters), n, channels, dtype=like.dtype, device=like.device)
    mask[torch.arange(len(filters)), :, torch.as_tensor(list(filters))] = 0
    return mask.reshape(len(filters) * n, channels, *([1] * (out_dims - 2)))


def _chunks(count: int, size: int) -> Iterable[list[int]]:
    for start in range(0, count, size):
        yield list(range(start, min(start + size, count)))


class _Recorder(fx.Interpreter):
    """Runs the traced graph once and keeps a copy of every node's value as it was produced.

    Copies, because a later in-place op (ReLU(inplace=True), +=) would otherwise rewrite the
    cached value of the node it reads.
    """

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out.clone() if isinstance(out, torch.Tensor) else out
        return out


class _Replayer(fx.Interpreter):
    """Re-executes the nodes missing from its initial env, zeroing channels of the ablated conv nodes."""

    def __init__(self, gm: fx.GraphModule, targets: set[fx.Node], mask: torch.Tensor | None):
        super().__init__(gm)
        self.targets, self.mask = targets, mask

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        return out * self.mask if n in self.targets and self.mask is not None else out


class _FxEngine:
    """One trace and one cached forward of `model` on x, replayed per layer and filter batch."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.gm = fx.symbolic_trace(model)
        self.n = x.shape[0]
        recorder = _Recorder(self.gm)
        self.clean = _logits(recorder.run(x), self.n)
        self.values = recorder.values
        nodes = list(self.gm.graph.nodes)
        self.input_dependent: set[fx.Node] = set()
        for node in nodes:
            if node.op == "placeholder" or any(a in self.input_dependent for a in node.all_input_nodes):
                self.input_dependent.add(node)

    def _plan(self, layer: str) -> tuple[set[fx.Node], set[fx.Node]]:
        """(conv nodes of `layer`, nodes to re-execute): everything downstream of the conv, plus
        input-derived non-tensor values those read (x.size(0) must see the stacked batch)."""
        nodes = list(self.gm.graph.nodes)
        targets = {nd for nd in nodes if nd.op == "call_module" and nd.target == layer}
        if not targets:
            raise AblationPlanError(f"layer {layer!r} is not called as a module in the traced graph")
        rerun: set[fx.Node] = set()
        for nd in nodes:
            if any(a in targets or a in rerun for a in nd.all_input_nodes):
                rerun.add(nd)
        for nd in reversed(nodes):
            if (
                nd not in rerun
                and nd in self.input_dependent
                and not isinstance(self.values[nd], torch.Tensor)
                and any(u in rerun for u in nd.users)
            ):
                rerun.add(nd)
        return targets, rerun

    def _stacked(self, node: fx.Node, copies: int) -> Any:
        """The cached value of `node` as the stacked batch would have it."""
        value = self.values[node]
        if (
            node in self.input_dependent
            and isinstance(value, torch.Tensor)
            and value.dim() > 0
            and value.shape[0] == self.n
        ):
            return value.repeat(copies, *([1] * (value.dim() - 1)))
        return value

    def _replay(self, layer: str, targets: set[fx.Node], rerun: set[fx.Node], filters: Sequence[int] | int) -> torch.Tensor:
        """Logits (k·N, classes); `filters` a list to ablate, or a copy count for an unablated check."""
        copies = filters if isinstance(filters, int) else len(filters)
        mask = None
        if not isinstance(filters, int):
            out = self.values[next(iter(targets))]
            mask = _channel_mask(filters, self.n, out.shape[1], out.dim(), out)
        env = {}
        for nd in self.gm.graph.nodes:
            if nd in rerun or nd.op == "output":
                continue
            if nd not in targets and not any(u in rerun for u in nd.users):
                env[nd] = self.values[nd]  # never read by the replay: no need to stack it
                continue
            value = self._stacked(nd, copies)
            env[nd] = value * mask if nd in targets and mask is not None else value
        return _logits(_Replayer(self.gm, targets, mask).run(initial_env=env), copies * self.n)

    def ablate(self, layer: str, per_pass: int) -> torch.Tensor:
        """Logits (F, N, classes) with each filter of `layer` zeroed in turn."""
        targets, rerun = self._plan(layer)
        # Replaying unablated copies must reproduce the clean logits; if it does not, some value
        # the graph reads is not what the cache holds (an in-place op on a cached tensor, a batch
        # size captured elsewhere), and this layer cannot be replayed exactly.
        check = self._replay(layer, targets, rerun, 2)
        scale = max(1.0, float(self.clean.abs().max()))
        if not torch.allclose(check, self.clean.repeat(2, 1), rtol=1e-4, atol=1e-5 * scale):
            raise AblationPlanError(f"replaying the graph below {layer!r} does not reproduce the clean logits")
        channels = self.values[next(iter(targets))].shape[1]
        parts = [self._replay(layer, targets, rerun, fs).reshape(len(fs), self.n, -1) for fs in _chunks(channels, per_pass)]
        return torch.cat(parts)


def _hooked_ablation(model: nn.Module, layer: str, x: torch.Tensor, per_pass: int) -> torch.Tensor:
    """Logits (F, N, classes) by full forwards with a hook zeroing channels, k filters per pass."""
    module = model.get_submodule(layer)
    n = x.shape[0]
    _, outs = run_with_hooks(model, {layer: module}, x)
    out = outs[layer]
    parts = []
    for fs in _chunks(out.shape[1], per_pass):
        mask = _channel_mask(fs, n, out.shape[1], out.dim(), out)
        y, _ = run_with_hooks(model, {layer: module}, x.repeat(len(fs), *([1] * (x.dim() - 1))), record=False,
                              edit=lambda _name, o, mask=mask: o * mask)
        parts.append(_logits(y, len(fs) * n).reshape(len(fs), n, -1))
    return torch.cat(parts)


def ablated_logits(
    model: nn.Module,
    layers: Sequence[str],
    x: torch.Tensor,
    *,
    method: Method = "auto",
    max_batch: int = 256,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clean logits (N, classes) and, per conv layer name, logits (F, N, classes) with filter f zeroed.

    A filter is zeroed at the conv's output (every call, if the module is reused). Up to
    max_batch // N filters share one pass. method "fx" replays only the downstream graph and
    raises if it cannot; "hooks" runs full forwards; "auto" uses fx and falls back to hooks,
    with a warning, for the model or layer that fx cannot handle. Runs under no_grad.
    """
    model = unwrap(model)
    x = as_model_input(model, x.detach())
    per_pass = max(1, max_batch // x.shape[0])
    result: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        engine = None
        if method != "hooks":
            try:
                engine = _FxEngine(model, x)
            except Exception as err:  # fx raises many kinds (TraceError, TypeError, ...) on untraceable code
                if method == "fx":
                    raise
                warnings.warn(f"ablation: torch.fx cannot trace the model ({type(err).__name__}: {err}); "
                              "using forward hooks (one full forward per filter batch)", stacklevel=2)
        clean = engine.clean if engine is not None else _logits(model(x), x.shape[0])
        for layer in layers:
            if engine is not None:
                try:
                    result[layer] = engine.ablate(layer, per_pass)
                    continue
                except AblationPlanError as err:
                    if method == "fx":
                        raise
                    warnings.warn(f"ablation: {err}; using forward hooks for it", stacklevel=2)
            result[layer] = _hooked_ablation(model, layer, x, per_pass)
    return clean, result
