"""Per-filter numbers users define in their training script: `FilterMetric`.

A metric is one function of a layer (its weights, its activations on the probe, or anything the
analysed copy can compute) returning one value per filter. It runs where every analysis runs (the
background worker, on rank 0's weights under DDP, in `log-checkpoints`), and its record carries
its own declaration (label, unit, description, better direction), so the tab, `load()` and every
export show it with no change to this package.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from tb_convviz.schema import format as fmt
from tb_convviz.model.capture import as_model_input, run_with_hooks
from tb_convviz.model.layers import LayerSelector, filter_weights
from tb_convviz.schema.columns import BETTER, BUILTIN, Column


@dataclass
class MetricContext:
    """What a metric function sees of one layer at one log.

    `module`: the layer in the analysed copy; `weight` (F, in/groups, *kernel); `images` the
    probe (N, C, *spatial); `activations` (N, F, *spatial) this layer's output on it; `labels`
    (N,) or None; `layer_output(images)` this layer's output for any batch, through the analysed
    copy (for a perturbation response of your own).
    """

    layer: str
    module: nn.Module
    weight: torch.Tensor
    images: torch.Tensor
    activations: torch.Tensor
    labels: Optional[torch.Tensor]
    step: int
    model: nn.Module

    def layer_output(self, images: torch.Tensor) -> torch.Tensor:
        """This layer's output (N, F, *spatial) on `images`, without gradients."""
        with torch.no_grad():
            _, outputs = run_with_hooks(self.model, {self.layer: self.module}, as_model_input(self.model, images))
        return outputs[self.layer]


MetricFunction = Callable[[MetricContext], Any]


class FilterMetric:
    """A per-filter number of your own, shown in the tab beside the built-in ones.

    Args:
        name: the column's name (letters, digits, ``_``, ``-`` and ``.``; unique among metrics).
        fn: ``fn(ctx: MetricContext)`` → ``(F,)`` tensor or array, or ``{key: (F,)}`` for several
            columns named ``name.key``.
        label: the table header (default: `name`).
        description: the header's tooltip: what the number means, and its range.
        unit: e.g. ``"%"`` or ``""``.
        better: ``"higher"``, ``"lower"`` or None: which direction is better; the table sorts the
            other end first (the filters to look at).
        layers: restricts the metric like ConvViz's `layers` (None: every logged layer).
        columns: for a dict-returning `fn`, ``{key: {"label", "description", "unit", "better"}}``.

    `fn` runs beside training in the background worker: random draws should come from a
    ``torch.Generator`` of its own, since the global generator is the training loop's.
    """

    def __init__(
        self,
        name: str,
        fn: MetricFunction,
        *,
        label: Optional[str] = None,
        description: str = "",
        unit: str = "",
        better: Optional[str] = None,
        layers: LayerSelector = None,
        columns: Optional[Mapping[str, Mapping[str, Any]]] = None,
    ):
        if not isinstance(name, str) or not name or not all(ch.isalnum() or ch in "_-." for ch in name):
            raise ValueError(f"FilterMetric name must be non-empty letters, digits, '_', '-' or '.', got {name!r}")
        if not callable(fn):
            raise ValueError(f"FilterMetric {name!r}: fn must be callable, got {type(fn).__name__}")
        for arg, value in (("label", label), ("description", description), ("unit", unit)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"FilterMetric {name!r}: {arg} must be text, got {value!r}")
        if better not in (None, *BETTER):
            raise ValueError(f"FilterMetric {name!r}: better must be 'higher', 'lower' or None, got {better!r}")
        if not (layers is None or callable(layers) or isinstance(layers, (list, tuple, set))):
            raise ValueError(f"FilterMetric {name!r}: layers must be None, a list of module names or a predicate")
        if columns is not None and not (isinstance(columns, Mapping) and all(isinstance(v, Mapping) for v in columns.values())):
            raise ValueError(f"FilterMetric {name!r}: columns must map keys to {{'label', 'description', ...}}")
        self.name, self.fn = name, fn
        self.label, self.description, self.unit, self.better = label or name, description, unit, better
        self.layers = layers
        self.columns = {k: dict(v) for k, v in (columns or {}).items()}

    def applies_to(self, layer: str, module: nn.Module) -> bool:
        """Whether this metric is computed for `layer`."""
        if self.layers is None:
            return True
        if callable(self.layers):
            return bool(self.layers(layer, module))
        return layer in self.layers

    def column(self, key: Optional[str] = None) -> Column:
        """The declaration of this metric's column (or of its `key` column for a dict result)."""
        if key is None:
            return Column(self.name, self.label, self.description, fmt.KIND_METRICS, "user", self.unit, self.better,
                          _first(self.better))
        spec = self.columns.get(key, {})
        better = spec.get("better", self.better)
        return Column(f"{self.name}.{key}", spec.get("label", f"{self.label}: {key}"),
                      spec.get("description", self.description), fmt.KIND_METRICS, "user",
                      spec.get("unit", self.unit), better, _first(better))

    def evaluate(self, ctx: MetricContext, filters: int) -> dict[str, tuple[Column, np.ndarray]]:
        """{column name: (declaration, (F,) float32)}; ValueError naming the metric on a wrong result."""
        try:
            result = self.fn(ctx)
        except Exception as e:  # noqa: BLE001 - named here, reported by the caller
            raise MetricFailed(self.name, e) from e
        parts = result.items() if isinstance(result, Mapping) else ((None, result),)
        out = {}
        for key, value in parts:
            column = self.column(None if key is None else str(key))
            out[column.name] = (column, _per_filter(value, filters, column.name))
        return out


def _first(better: Optional[str]) -> str:
    """The end a table shows first: the worse one, which is where a user looks."""
    return {"higher": "low", "lower": "high"}.get(better or "", "high")


def _per_filter(value: Any, filters: int, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"FilterMetric {name!r} must return one number per filter, got {type(value).__name__}") from None
    if array.shape != (filters,):
        raise ValueError(f"FilterMetric {name!r} must return shape ({filters},) (one value per filter), got {array.shape}")
    return array


def layer_context(layer: str, module: nn.Module, images: torch.Tensor, activations: torch.Tensor,
                  labels: Optional[torch.Tensor], step: int, model: nn.Module) -> MetricContext:
    """The context every metric of `layer` sees at this log."""
    return MetricContext(layer, module, filter_weights(module).detach(), images, activations, labels, step, model)


def metric_columns(metrics: list[FilterMetric], ctx: MetricContext, warn: Callable[[str], None]) -> dict[str, tuple[Column, np.ndarray]]:
    """Every metric that applies to the context's layer; one that fails warns (naming it) and the
    others still land."""
    out: dict[str, tuple[Column, np.ndarray]] = {}
    for metric in metrics:
        if metric.applies_to(ctx.layer, ctx.module):
            try:
                out.update(metric.evaluate(ctx, ctx.activations.shape[1]))
            except (MetricFailed, ValueError) as e:
                warn(str(e))
    return out


class MetricFailed(Exception):
    """A user metric raised: which one, and what."""

    def __init__(self, name: str, error: BaseException):
        super().__init__(f"FilterMetric {name!r} failed ({type(error).__name__}: {error})")
        self.name, self.error = name, error


MetricsArgument = Union[None, FilterMetric, list, tuple]


def check_metrics(metrics: MetricsArgument) -> list[FilterMetric]:
    """ConvViz's `metrics` argument as a list, names unique; ValueError naming the problem."""
    if metrics is None:
        return []
    items = [metrics] if isinstance(metrics, FilterMetric) else metrics
    if not isinstance(items, (list, tuple)) or not all(isinstance(m, FilterMetric) for m in items):
        raise ValueError("metrics must be a FilterMetric or a list of them")
    names = [m.name for m in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"metrics: names must be unique, {repeated} repeat")
    builtin = sorted(set(names) & {c.name for c in BUILTIN})
    if builtin:
        raise ValueError(f"metrics: {builtin} name built-in columns; choose other names")
    return list(items)
