"""ConvViz: the one line users add to a training loop. It orchestrates; analyses live elsewhere."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
import inspect
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from tb_convviz import format as fmt
from tb_convviz.analysis.activations import activation_stats, downsample_maps, map_resolution
from tb_convviz.analysis.compare import weight_drift
from tb_convviz.analysis.impact import filter_impact
from tb_convviz.analysis.perturbation import counterfactual_sensitivity, perturbation_responses
from tb_convviz.analysis.kernels import filter_stats, fold_batchnorm, kernel_tiles
from tb_convviz.capture import as_model_input, run_with_hooks
from tb_convviz.layers import LayerSelector, conv_layers, filter_weights, following_batchnorm, layer_info, unwrap
from tb_convviz.observe import untouched
from tb_convviz.probe import make_probe
from tb_convviz.writer import RecordWriter

SMALL_LAYER_WEIGHTS = 65_536  # layers this small keep full kernels every epoch: they cost < 64 KB


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _perturbation_options(perturbations: Any) -> dict[str, Any]:
    """Keyword options for `perturbation_responses` from the `perturbations` argument."""
    if isinstance(perturbations, bool):
        return {}
    if not isinstance(perturbations, Mapping):
        raise ValueError(f"perturbations must be True, False or a dict of options, got {perturbations!r}")
    allowed = set(inspect.signature(perturbation_responses).parameters) - {"model", "layers", "x", "y", "counterfactuals"}
    unknown = sorted(set(perturbations) - allowed)
    if unknown:
        raise ValueError(f"perturbations: unknown options {unknown}; known: {sorted(allowed)}")
    return dict(perturbations)


class _ProbeForwardFailed(Exception):
    """The model could not run the probe batch."""


@dataclass
class _LayerMemory:
    """What the callback remembers of one layer between logs, to report drift."""

    first_step: int
    first: torch.Tensor
    prev_step: int
    prev: torch.Tensor


@dataclass
class _ModelPlan:
    """Resolved once, at the first log: which convs, which BatchNorm follows each."""

    layers: dict[str, nn.Module]
    batchnorm: dict[str, str]  # conv name -> name of the BatchNorm right after it
    batchnorm_modules: dict[str, nn.Module]  # conv name -> that BatchNorm
    memory: dict[str, _LayerMemory] = field(default_factory=dict)


class ConvViz:
    """Log what every conv filter learned, each epoch, for the CONVVIZ TensorBoard tab.

    Args:
        log_dir_or_summary_writer: a log directory, or a torch ``SummaryWriter`` to share.
        probe: the fixed batch to measure activations on: images ``(N, C, *spatial)`` or
            ``(images, labels)``. None logs kernels only.
        layers: None (every conv), a list of module names, or ``predicate(name, module)``.
        every_n_epochs: log only when ``step % every_n_epochs == 0`` (and on ``final``).
        kernels_every: full kernels every this many logs, at the first and the final one;
            layers with ≤ 65,536 weights keep full kernels every log. Drift is exact every log.
        map_size: activation maps are average-pooled so no side exceeds this.
        map_images: activation maps are kept for at most this many probe images (stats use all).
        map_budget_mb: all layers' maps of one log fit this; sides, then images, shrink to fit.
        keep_all: keep everything: full kernels every log, full-resolution maps of every probe image.
        perturbations: log each filter's responses to oriented gratings (2-D), shift and reversal
            (1-D), Gaussian noise and FGSM/PGD attacks on the probe. A dict instead of True passes
            options to `perturbation_responses`, e.g. ``{"rotate_probe": True, "angles": 24}``.
        counterfactuals: ``{"name": edit(batch) -> batch}``; each filter's sensitivity to each edit
            (e.g. "remove the watermark") is logged and outliers are flagged.
        impact: log what the model loses without each filter (exact ablation, Taylor estimate),
            class selectivity and top activating probe examples. Needs probe labels.
    """

    def __init__(
        self,
        log_dir_or_summary_writer: Any,
        probe: Any = None,
        layers: LayerSelector = None,
        every_n_epochs: int = 1,
        *,
        kernels_every: int = 20,
        map_size: int = 16,
        map_images: int = 4,
        map_budget_mb: float = 0.5,
        keep_all: bool = False,
        perturbations: Union[bool, Mapping[str, Any]] = True,
        counterfactuals: Optional[Mapping[str, Callable[[torch.Tensor], torch.Tensor]]] = None,
        impact: bool = False,
    ):
        self.every_n_epochs = _positive_int(every_n_epochs, "every_n_epochs")
        self.kernels_every = _positive_int(kernels_every, "kernels_every")
        self.map_size = _positive_int(map_size, "map_size")
        self.map_images = _positive_int(map_images, "map_images")
        if isinstance(map_budget_mb, bool) or not isinstance(map_budget_mb, (int, float)) or not map_budget_mb > 0:
            raise ValueError(f"map_budget_mb must be a positive number, got {map_budget_mb!r}")
        self.map_budget_mb = float(map_budget_mb)
        if not isinstance(keep_all, bool):
            raise ValueError(f"keep_all must be True or False, got {keep_all!r}")
        self.keep_all = keep_all
        if not isinstance(impact, bool):
            raise ValueError(f"impact must be True or False, got {impact!r}")
        self.perturbations = bool(perturbations)
        self.perturbation_options = _perturbation_options(perturbations)
        self.impact = impact
        if counterfactuals is not None and (
            not isinstance(counterfactuals, Mapping)
            or not all(isinstance(k, str) and k and "/" not in k and callable(v) for k, v in counterfactuals.items())
        ):
            raise ValueError('counterfactuals must map names (no "/") to callables: {"name": edit(batch) -> batch}')
        self.counterfactuals = dict(counterfactuals or {})
        if not (layers is None or callable(layers) or isinstance(layers, (str, list, tuple, set))):
            raise ValueError(f"layers must be None, a list of module names or a predicate, got {type(layers).__name__}")
        self._layer_selector = layers
        self._probe = make_probe(probe)
        if (impact or self.counterfactuals) and self._probe is None:
            raise ValueError("impact and counterfactuals need a probe: pass probe=(images, labels)")
        if impact and self._probe.labels is None:
            raise ValueError("impact=True needs probe labels: pass probe=(images, labels)")
        self._writer = RecordWriter(log_dir_or_summary_writer)
        self._plan: Optional[_ModelPlan] = None
        self._logs_done = 0
        self._warned: set[str] = set()
        self._closed = False

    # -- public verbs -------------------------------------------------------------------------

    def log(self, model: nn.Module, step: int, *, final: bool = False) -> bool:
        """Log every chosen conv layer of `model` at `step`; returns whether anything was written.

        A configuration problem (no such layer, no conv, a probe the model cannot take) raises
        ValueError at the first log. Any later failure warns once and training goes on.
        """
        if self._closed:
            raise RuntimeError("ConvViz.log() called after close()")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"step must be an integer, got {step!r}")
        if step % self.every_n_epochs != 0 and not final:
            return False
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return False  # one writer per job: rank 0 sees the same weights as every rank
        model = unwrap(model)
        first = self._plan is None
        if first:
            layers = conv_layers(model, self._layer_selector)
            with untouched(model):  # tracing runs Python forward code, which may touch buffers
                batchnorm = following_batchnorm(model, layers)
            modules = dict(model.named_modules())
            self._plan = _ModelPlan(layers, batchnorm, {c: modules[b] for c, b in batchnorm.items()})
        try:
            records = self._collect(model, int(step), final or first)
        except _ProbeForwardFailed as e:
            if first:  # a configuration error: say so now rather than warn every epoch
                self._plan = None
                raise ValueError(f"probe of shape {tuple(self._probe.images.shape)} does not fit the model: {e}") from e
            self._warn(f"the probe forward pass failed ({e})", step)
            return False
        except Exception as e:  # noqa: BLE001 - observers must never stop training
            self._warn(f"logging failed ({type(e).__name__}: {e})", step)
            return False
        try:
            for layer, kind, payload in records:
                self._writer.write(layer, kind, step, payload)
            self._writer.flush()
        except Exception as e:  # noqa: BLE001 - a full disk must not end the training run
            self._warn(f"writing failed ({type(e).__name__}: {e}); earlier steps are intact", step)
            return False
        self._logs_done += 1
        return True

    def on_epoch_end(self, model: nn.Module, epoch: int) -> bool:
        """Alias of `log`, named for the moment it runs."""
        return self.log(model, epoch)

    def close(self) -> None:
        """Close convviz's event file (a shared SummaryWriter stays open for its owner)."""
        if not self._closed:
            self._closed = True
            try:
                self._writer.close()
            except Exception as e:  # noqa: BLE001
                self._warn(f"closing the event file failed ({type(e).__name__}: {e})")

    def __enter__(self) -> "ConvViz":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- orchestration ------------------------------------------------------------------------

    def _warn(self, problem: str, step: Optional[int] = None) -> None:
        """Warn once per distinct problem: a failure that persists must not flood the training log."""
        if problem not in self._warned:
            self._warned.add(problem)
            where = f" at step {step}" if step is not None else ""
            warnings.warn(
                f"tb_convviz: {problem}{where}; training goes on, and this warning is not repeated",
                RuntimeWarning,
                stacklevel=3,
            )

    def _collect(self, model: nn.Module, step: int, full: bool) -> list[tuple[str, str, bytes]]:
        """Every record of this step, computed before anything is written."""
        plan = self._plan
        assert plan is not None
        full_kernels = self.keep_all or full or self._logs_done % self.kernels_every == 0
        outputs: dict[str, torch.Tensor] = {}
        x = None
        with untouched(model):
            with torch.no_grad():
                if self._probe is not None:
                    x = as_model_input(model, self._probe.images)
                    try:
                        _, outputs = run_with_hooks(model, plan.layers, x)
                    except Exception as e:  # noqa: BLE001 - re-raised with its meaning attached
                        raise _ProbeForwardFailed(f"{type(e).__name__}: {e}") from e
                records = []
                if self._logs_done == 0:
                    records.append((fmt.RUN_LAYER, fmt.KIND_RUN, self._run_record(plan)))
                maps_kept = self._map_resolution(outputs)
                for name, conv in plan.layers.items():
                    acts = outputs.get(name)
                    records.extend(self._layer_records(name, conv, step, full_kernels, acts, maps_kept))
            del outputs
            if x is not None:
                records.extend(self._analysis_records(model, x, step))
        return records

    def _map_resolution(self, outputs: dict[str, torch.Tensor]) -> tuple[int, Optional[int]]:
        """(probe images, max side) of the maps kept this log; keep_all keeps them whole."""
        if self.keep_all or not outputs:
            return (self._probe.n if self._probe else 0), None
        shapes = [tuple(a.shape[1:]) for a in outputs.values()]
        images = min(self.map_images, self._probe.n if self._probe else 0)
        return map_resolution(shapes, images, self.map_size, int(self.map_budget_mb * 1e6))

    def _analysis_records(self, model: nn.Module, x: torch.Tensor, step: int) -> list[tuple[str, str, bytes]]:
        """Perturbation and impact records; one failing analysis warns and the others still land."""
        plan = self._plan
        assert plan is not None and self._probe is not None
        labels = self._probe.labels
        y = labels.to(x.device) if labels is not None else None
        analyses: list[tuple[str, Callable[[], dict]]] = []
        if self.perturbations or self.counterfactuals:
            analyses.append(
                (
                    fmt.KIND_PERTURBATION,
                    lambda: perturbation_responses(
                        model, plan.layers, x, y, counterfactuals=self.counterfactuals, **self.perturbation_options
                    )
                    if self.perturbations
                    else counterfactual_sensitivity(model, plan.layers, x, self.counterfactuals),
                )
            )
        if self.impact:
            analyses.append((fmt.KIND_IMPACT, lambda: filter_impact(model, plan.layers, x, y)))
        records = []
        for kind, run_analysis in analyses:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # their caveats are for notebooks, not every epoch
                    per_layer = run_analysis()
            except Exception as e:  # noqa: BLE001 - the rest of the step still lands
                self._warn(f"the {kind} analysis failed ({type(e).__name__}: {e})", step)
                continue
            for name, arrays in per_layer.items():
                records.append((name, kind, fmt.encode_bundle({k: fmt.natural_encoding(v) for k, v in arrays.items()}, {})))
        return records

    def _run_record(self, plan: _ModelPlan) -> bytes:
        arrays: dict[str, tuple[str, np.ndarray, int]] = {}
        meta: dict[str, Any] = {"layers": list(plan.layers)}
        if self._probe is not None:
            arrays["images"] = ("q8", self._probe.images.numpy(), 1)
            if self._probe.labels is not None:
                arrays["labels"] = ("i32", self._probe.labels.numpy(), 0)
        return fmt.encode_bundle(arrays, meta)

    def _layer_records(
        self,
        name: str,
        conv: nn.Module,
        step: int,
        full_kernels: bool,
        acts: Optional[torch.Tensor],
        maps_kept: tuple[int, Optional[int]],
    ) -> list[tuple[str, str, bytes]]:
        plan = self._plan
        assert plan is not None
        # A copy, never a view: the drift memory must not follow the live parameter.
        w = filter_weights(conv).to("cpu", torch.float32, copy=True)
        if not torch.isfinite(w).all():
            self._warn(f"layer {name!r} has NaN or infinite weights (logged as 0)", step)
        info = layer_info(conv)
        info["batchnorm"] = plan.batchnorm.get(name)
        memory = plan.memory.get(name)
        if memory is None:
            memory = plan.memory[name] = _LayerMemory(step, w, step, w)
        stats = {k: v.numpy() for k, v in filter_stats(w).items()}
        for key, value in weight_drift(memory.prev.numpy(), w.numpy()).items():
            stats[f"{key}_prev"] = value
        stats["cosine_distance_first"] = weight_drift(memory.first.numpy(), w.numpy())["cosine_distance"]
        meta = {"info": info, "prev_step": memory.prev_step, "first_step": memory.first_step}
        arrays: dict[str, tuple[str, np.ndarray, int]] = {"tiles": ("q8", kernel_tiles(w).numpy(), 1)}
        records = []
        if acts is not None:
            stats.update({k: v.cpu().numpy() for k, v in activation_stats(acts).items()})
            n, side = maps_kept
            maps = acts[:n] if side is None else downsample_maps(acts[:n], side)
            map_meta = {"images": list(range(n)), "source_shape": list(acts.shape[2:])}
            records.append((name, fmt.KIND_MAPS, fmt.encode_bundle({"maps": ("q8", maps.float().cpu().numpy(), 2)}, map_meta)))
        for key, value in stats.items():
            arrays[key] = ("f32", value, 0)
        records.insert(0, (name, fmt.KIND_FILTERS, fmt.encode_bundle(arrays, meta)))
        if full_kernels or w.numel() <= SMALL_LAYER_WEIGHTS:
            records.append((name, fmt.KIND_KERNELS, self._kernel_record(name, conv, w)))
        memory.prev_step, memory.prev = step, w
        return records

    def _kernel_record(self, name: str, conv: nn.Module, w: torch.Tensor) -> bytes:
        plan = self._plan
        assert plan is not None
        arrays: dict[str, tuple[str, np.ndarray, int]] = {"kernel": ("q8", w.numpy(), 1)}
        bn_name = plan.batchnorm.get(name)
        bn = plan.batchnorm_modules.get(name)
        if bn is not None:
            bias = conv.bias.detach().cpu() if conv.bias is not None else None
            gamma = bn.weight.detach().cpu() if bn.weight is not None else None
            beta = bn.bias.detach().cpu() if bn.bias is not None else None
            scale, b_eff = fold_batchnorm(bias, bn.running_mean.cpu(), bn.running_var.cpu(), gamma, beta, bn.eps)
            arrays["bn_scale"] = ("f32", scale.numpy(), 0)
            arrays["effective_bias"] = ("f32", b_eff.numpy(), 0)
        if conv.bias is not None:
            arrays["bias"] = ("f32", conv.bias.detach().float().cpu().numpy(), 0)
        return fmt.encode_bundle(arrays, {"batchnorm": bn_name})
