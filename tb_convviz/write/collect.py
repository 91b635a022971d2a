"""One logged step: run the probe and every analysis on a model, and build the step's records.

Runs on the worker thread (on the callback's private model copy) or inline; either way it only
reads the model. What it remembers between steps is the drift baseline of each layer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz.analysis.activations import activation_stats, downsample_maps, map_resolution
from tb_convviz.analysis.compare import weight_drift
from tb_convviz.analysis.feature_vis import feature_visualization, input_range, visualization_shape
from tb_convviz.analysis.footprint import kernel_footprint
from tb_convviz.analysis.impact import DEFAULT_ALPHA, filter_impact, finish_impact, merge_impact
from tb_convviz.analysis.kernels import filter_stats, fold_batchnorm, kernel_tiles
from tb_convviz.analysis.perturbation import counterfactual_sensitivity, perturbation_responses
from tb_convviz.analysis.similarity import gram_matrix, response_profile
from tb_convviz.model.capture import as_model_input, run_with_hooks
from tb_convviz.write.cost import PROBE_PASS, SIMILARITY, WEIGHTS_AND_MAPS, CostMeter
from tb_convviz.write.distributed import ALONE, Shard
from tb_convviz.model.layers import activation_function, filter_weights, layer_info
from tb_convviz.write.metrics import FilterMetric, layer_context, metric_columns
from tb_convviz.write.probe import Probe
from tb_convviz.write.visualize import (
    FeatureVisSettings, calibrated, chosen_filters, filter_cost, prefix_flops, visit_turns,
)

# The first layers (the ones most often looked at) keep full kernels at every log, up to this many
# weights in all (128 KB a log in q8): a fixed cost, not one that grows with the model — a ResNet-50
# has 0.8 M weights in layers of ≤ 64 K each, which would be 0.8 MB every epoch.
EVERY_LOG_KERNEL_WEIGHTS = 131_072
# Response profiles (matching, filter maps) use at most this many probe images: they cost filters ×
# images bytes every epoch (a ResNet-18's 4,800 filters: 150 KB at 32), while the Gram (CKA) costs
# images² / 2 per layer whatever the width, so it takes all `similarity_images`.
PROFILE_IMAGES = 32
# Perturbation responses and response profiles cost ~80 bytes a filter and log: past this many
# filters (a ResNet-50 has 26,560) the layers take turns, so that a steady log stays near 2 MB.
RESPONSE_FILTERS = 8192

Record = tuple[str, str, bytes]  # (layer, kind, bundle bytes)
Warn = Callable[[str], None]


class ProbeForwardFailed(Exception):
    """The model could not run the probe batch."""


@dataclass(frozen=True)
class Settings:
    """What to log, from the ConvViz arguments (validated there)."""

    keep_all: bool
    map_size: int
    map_images: int
    map_budget_mb: float
    perturbations: bool
    perturbation_options: Mapping[str, Any]
    counterfactuals: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]
    impact: bool
    impact_options: Mapping[str, Any]
    similarity_images: int  # probe images in the Gram and profile records; 0: none are written
    response_filters: Optional[int]  # filters a log records responses of (`layer_turns`); None: all
    metrics: tuple[FilterMetric, ...] = ()  # the user's per-filter metrics
    feature_vis: Optional[FeatureVisSettings] = None  # None: no feature visualization


@dataclass
class _LayerMemory:
    """What is remembered of one layer between logs, to report drift."""

    first_step: int
    first: torch.Tensor
    prev_step: int
    prev: torch.Tensor


@dataclass
class Plan:
    """Resolved at the first log, by module name so that any model object of the same
    architecture can be logged: which convs, and the BatchNorm right after each."""

    layers: list[str]
    batchnorm: dict[str, str]  # conv name -> name of the BatchNorm right after it
    every_log_kernels: set[str] = field(default_factory=set)  # layers whose full kernels every log keeps
    turns: list[list[str]] = field(default_factory=list)  # `layer_turns`: whose responses each log records
    memory: dict[str, _LayerMemory] = field(default_factory=dict)
    activation: dict[str, str] = field(default_factory=dict)  # conv name -> the nonlinearity right after it
    flop_share: dict[str, float] = field(default_factory=dict)  # `prefix_flops`, measured at the first visualisation
    vis_turns: list[list[str]] = field(default_factory=list)  # `visualize.visit_turns`: whose filters each log visualises
    vis_scale: float = 1.0  # `visualize.calibrated`: measured over estimated cost of the last visualisations
    # Per layer, the full kernels later logs' kernels are stored as changes from: only once their
    # step is committed (`keyframes_written`), never a record a reader might not find.
    keyframes: dict[str, records.Keyframe] = field(default_factory=dict)
    pending_keyframes: dict[str, records.Keyframe] = field(default_factory=dict)

    def keyframes_written(self) -> None:
        """The step whose records were collected last is committed: its keyframes may be referred to."""
        self.keyframes.update(self.pending_keyframes)
        self.pending_keyframes.clear()

    def responders(self, logs_done: int, full: bool) -> list[str]:
        """The layers whose perturbation responses and response profiles this log records: all of
        them on a full log (first, final, every `kernels_every`-th), else the next turn's."""
        if full or len(self.turns) <= 1:
            return list(self.layers)
        return self.turns[logs_done % len(self.turns)]


def first_layers(layers: Mapping[str, nn.Module]) -> set[str]:
    """The leading layers, in model order, whose weights fit EVERY_LOG_KERNEL_WEIGHTS together."""
    chosen, total = set(), 0
    for name, conv in layers.items():
        total += conv.weight.numel()
        if total > EVERY_LOG_KERNEL_WEIGHTS:
            break
        chosen.add(name)
    return chosen


def _drift_baseline(conv: nn.Module) -> torch.Tensor:
    # A copy, never a view: the drift memory must not follow the model's parameter.
    return filter_weights(conv).to("cpu", torch.float32, copy=True)


def remember(plan: Plan, first: nn.Module, first_step: int, last: nn.Module, last_step: int) -> None:
    """Set each layer's drift memory from two models: the run's first and its latest logged weights."""
    for name in plan.layers:
        plan.memory[name] = _LayerMemory(
            first_step, _drift_baseline(first.get_submodule(name)), last_step, _drift_baseline(last.get_submodule(name))
        )


def chosen_layers(model: nn.Module, plan: Plan) -> dict[str, nn.Module]:
    """{name: module} of the plan's conv layers in this model object."""
    modules = dict(model.named_modules())
    return {n: modules[n] for n in plan.layers}


def probe_forward(model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
    """(model output, {layer: output}) of one hooked pass of the probe input x, under no_grad."""
    try:
        with torch.no_grad():
            return run_with_hooks(model, layers, x)
    except Exception as e:  # noqa: BLE001 - re-raised with its meaning attached
        raise ProbeForwardFailed(f"{type(e).__name__}: {e}") from e


def check_labels(out: Any, probe: Probe) -> None:
    """Labels must name the model's classes: a label ≥ the logits' width would only fail later,
    inside the analyses, as a warning every epoch."""
    if probe.labels is None or not isinstance(out, torch.Tensor) or out.dim() != 2:
        return
    classes = out.shape[1]
    bad = probe.labels[(probe.labels < 0) | (probe.labels >= classes)]
    if bad.numel():
        shown = sorted(set(bad.tolist()))[:10]
        raise ValueError(f"probe labels {shown} are outside the model's {classes} classes (0..{classes - 1})")


def collect_step(
    model: nn.Module, plan: Plan, probe: Optional[Probe], settings: Settings, step: int, full_kernels: bool,
    first: bool, warn: Warn, shard: Shard = ALONE, responders: Optional[list[str]] = None,
    meter: Optional[CostMeter] = None, log_index: int = 0,
) -> list[Record]:
    """Every record of this step, in write order, computed before anything is written.
    `responders`: the layers whose perturbation responses and profiles it records (None: all).
    `log_index`: how many logs came before, which picks the layers whose impact calibration
    sample this log draws (`analysis.impact.exact_plan`).
    `meter` times each part (`cost.py`).

    Under several ranks each computes its share of the exact ablation first (every rank, every
    step, so the gather always meets); the rank that writes builds the rest and the records.
    """
    meter = meter if meter is not None else CostMeter()
    plan.pending_keyframes.clear()  # those of a step that was never committed
    modules = dict(model.named_modules())
    layers = {n: modules[n] for n in plan.layers}
    responding = {n: layers[n] for n in (plan.layers if responders is None else responders)}
    x = as_model_input(model, probe.images) if probe is not None else None
    shared = probe is not None and shard.world > 1
    shared_impact = shared_responses = None
    if shared and settings.impact:
        with meter.part(fmt.KIND_IMPACT):
            shared_impact = _impact_shares(model, layers, x, probe, settings, shard, log_index)
    if shared and settings.perturbations:
        with meter.part(fmt.KIND_PERTURBATION):
            shared_responses = _perturbation_shares(model, responding, x, probe, settings, shard)
    if not shard.writes:
        return []
    outputs: dict[str, torch.Tensor] = {}
    if x is not None:
        with meter.part(PROBE_PASS):
            _, outputs = probe_forward(model, layers, x)
    result: list[Record] = []
    with meter.part(WEIGHTS_AND_MAPS):
        if first:
            images = probe.images.numpy() if probe is not None else None
            labels = probe.labels.numpy() if probe is not None and probe.labels is not None else None
            result.append((fmt.RUN_LAYER, fmt.KIND_RUN, records.run_record(plan.layers, images, labels)))
        maps_kept = _map_resolution(settings, probe, outputs)
        for name in plan.layers:
            bn_name = plan.batchnorm.get(name)
            result.extend(
                _layer_records(plan, name, modules[name], modules.get(bn_name) if bn_name else None, bn_name, step,
                               full_kernels, outputs.get(name), maps_kept, warn)
            )
    if outputs and settings.similarity_images:
        with meter.part(SIMILARITY):
            result.extend(_similarity_records(plan, outputs, settings.similarity_images, responding))
    if outputs and settings.metrics:
        with meter.part(fmt.KIND_METRICS):
            result.extend(_metric_records(model, layers, x, outputs, probe, settings.metrics, step, warn))
    del outputs
    impact: dict[str, dict[str, np.ndarray]] = {}
    if x is not None and probe is not None:
        result.extend(_analysis_records(model, layers, responding, probe, settings, x, warn, meter, log_index, shared_impact,
                                        shared_responses, impact))
    if x is not None and settings.feature_vis is not None:
        try:
            with meter.part(fmt.KIND_FEATURE_VIS):
                result.extend(_feature_vis_records(model, plan, modules, x, settings.feature_vis, log_index, impact,
                                                   meter.parts[PROBE_PASS].wall_s if PROBE_PASS in meter.parts else 0.0))
        except Exception as e:  # noqa: BLE001 - the rest of the step still lands
            warn(f"the {fmt.KIND_FEATURE_VIS} analysis failed ({type(e).__name__}: {e})")
    return result


def _filter_scores(plan: Plan, impact: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """How much each filter matters, for the default choice of filters to visualise: |Δloss| where
    impact was measured this log (exact where ablated, else the Taylor estimate), else the drift
    since the first log (the weights' norm breaks ties, as on a first log where nothing drifted)."""
    scores = {}
    for name in plan.layers:
        found = impact.get(name, {})
        if records.IMPACT_TAYLOR in found:
            exact = np.asarray(found.get(records.IMPACT_D_LOSS, np.full(len(found[records.IMPACT_TAYLOR]), np.nan)), np.float64)
            scores[name] = np.abs(np.where(np.isfinite(exact), exact, found[records.IMPACT_TAYLOR]))
            continue
        memory = plan.memory[name]
        norm = memory.prev.flatten(1).norm(dim=1).numpy()
        drift = weight_drift(memory.first.numpy(), memory.prev.numpy())["cosine_distance"]
        scores[name] = np.nan_to_num(drift) + 1e-6 * norm / max(float(norm.max()), 1e-12)
    return scores


def _feature_vis_records(model: nn.Module, plan: Plan, modules: Mapping[str, nn.Module], x: torch.Tensor,
                         vis: FeatureVisSettings, log_index: int, impact: Mapping[str, Mapping[str, np.ndarray]],
                         probe_s: float) -> list[Record]:
    """This log's feature visualisations (`visualize.chosen_filters`: by default the filters that
    matter most of this log's turn of layers, within the budget), one record per layer. The
    objective reads each conv after its BatchNorm and the nonlinearity that follows
    (`Plan.activation`). `probe_s`: this log's probe pass, against which the visualisations' cost is
    measured to calibrate the next log's estimates (`visualize.calibrated`)."""
    if not plan.flop_share:
        plan.flop_share = prefix_flops(model, x)
    counts = {name: filter_weights(modules[name]).shape[0] for name in plan.layers}
    ratio = float(np.prod(visualization_shape(x, vis.size))) / float(np.prod(x.shape[2:]))
    costs = {name: plan.vis_scale * filter_cost(vis, plan.flop_share.get(name, 1.0), x.shape[0], ratio) for name in plan.layers}
    if not plan.vis_turns:
        plan.vis_turns = visit_turns(vis, costs)
    turn = plan.vis_turns[log_index % len(plan.vis_turns)]
    targets = chosen_filters(vis, counts, turn, costs, _filter_scores(plan, impact) if vis.filters is None else {})
    if not targets:
        plan.vis_scale = calibrated(0.0, 0.0, plan.vis_scale)
        return []
    hooked = {name: modules[plan.batchnorm.get(name, name)] for name in targets}
    acts = {name: activation_function(model, plan.activation[name]) for name in targets if name in plan.activation}
    started = time.perf_counter()
    found = feature_visualization(model, hooked, x, targets, acts, **vis.analysis_options())
    if probe_s > 0:
        estimated = sum(costs[name] * len(idx) for name, idx in targets.items())
        plan.vis_scale = calibrated((time.perf_counter() - started) / probe_s, estimated, plan.vis_scale)
    value_range = input_range(x)
    settings = {"steps": vis.steps, "seed": vis.seed, "lr": vis.lr}
    return [(name, fmt.KIND_FEATURE_VIS, records.feature_vis_record(arrays, value_range.lo.cpu().numpy(), value_range.hi.cpu().numpy(), settings))
            for name, arrays in found.items()]


def _impact_shares(model: nn.Module, layers: Mapping[str, nn.Module], x: Any, probe: Any, settings: Settings,
                   shard: Shard, log_index: int) -> Optional[list]:
    """This rank's share of the impact analysis, gathered on the writing rank: each rank's
    per-layer arrays, or the text of what went wrong there."""
    try:
        share = filter_impact(model, layers, x, probe.labels.to(x.device), share=(shard.rank, shard.world),
                              log_index=log_index, **settings.impact_options)
    except Exception as e:  # noqa: BLE001 - reported by the writing rank, which writes what it has
        share = f"{type(e).__name__}: {e}"
    return shard.gather(share)


class _GatherOnce:
    """The shard's gather, remembering whether it ran: a rank that fails before reaching it must
    still take part once, or the other ranks wait for it until the group's timeout."""

    def __init__(self, shard: Shard):
        self.shard, self.done = shard, False

    def __call__(self, obj: Any) -> Optional[list]:
        self.done = True
        return self.shard.gather(obj)


def _perturbation_shares(model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor, probe: Probe,
                         settings: Settings, shard: Shard) -> Any:
    """This rank's share of the perturbed rows; on the writing rank, the assembled responses (or
    the exception that stopped them, raised again when its records are built)."""
    gather = _GatherOnce(shard)
    y = probe.labels.to(x.device) if probe.labels is not None else None
    try:
        return perturbation_responses(model, layers, x, y, counterfactuals=settings.counterfactuals,
                                      share=(shard.rank, shard.world, gather), **settings.perturbation_options)
    except Exception as e:  # noqa: BLE001 - reported by the writing rank
        if not gather.done:
            gather(f"{type(e).__name__}: {e}")
        return e


def _raised_or(result: Any) -> Any:
    if isinstance(result, Exception):
        raise result
    return result


def _merged_impact(parts: list, settings: Settings, labels: np.ndarray, warn: Warn) -> dict[str, dict[str, np.ndarray]]:
    """One impact result from the ranks' shares; a rank that failed leaves its filters estimated."""
    good = [p for p in parts if isinstance(p, dict)]
    for rank, part in enumerate(parts):
        if not isinstance(part, dict):
            warn(f"rank {rank} failed its share of the impact analysis ({part}); its filters are left to the Taylor estimate")
    if not good:
        raise RuntimeError("every rank failed its share of the impact analysis")
    alpha = settings.impact_options.get("alpha", DEFAULT_ALPHA)
    return {name: finish_impact(merge_impact([p[name] for p in good]), labels, alpha) for name in good[0]}


def _similarity_records(plan: Plan, outputs: dict[str, torch.Tensor], images: int, responding: Mapping[str, nn.Module]) -> list[Record]:
    """The step's Gram record (every layer, for CKA: images² each, whatever the width) and the
    response profile of each `responding` layer."""
    grams = {name: gram_matrix(outputs[name][:images].float()) for name in plan.layers if name in outputs}
    result: list[Record] = [(fmt.RUN_LAYER, fmt.KIND_GRAM, records.gram_record(grams))]
    for name in (n for n in grams if n in responding):
        profile = response_profile(outputs[name][: min(images, PROFILE_IMAGES)].float())
        result.append((name, fmt.KIND_PROFILE, records.profile_record(profile)))
    return result


def _metric_records(model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor, outputs: dict[str, torch.Tensor],
                    probe: Probe, metrics: tuple[FilterMetric, ...], step: int, warn: Warn) -> list[Record]:
    """Each layer's user metrics, as one record a layer; a failing metric warns and the rest land."""
    labels = probe.labels.to(x.device) if probe.labels is not None else None
    result: list[Record] = []
    for name, conv in layers.items():
        if name in outputs:
            columns = metric_columns(list(metrics), layer_context(name, conv, x, outputs[name], labels, step, model), warn)
            if columns:
                result.append((name, fmt.KIND_METRICS, records.metrics_record(columns)))
    return result


def _map_resolution(settings: Settings, probe: Optional[Probe], outputs: dict[str, torch.Tensor]) -> tuple[int, Optional[int]]:
    """(probe images, max side) of the maps kept this log; keep_all keeps them whole."""
    n = probe.n if probe is not None else 0
    if settings.keep_all or not outputs:
        return n, None
    shapes = [tuple(a.shape[1:]) for a in outputs.values()]
    return map_resolution(shapes, min(settings.map_images, n), settings.map_size, int(settings.map_budget_mb * 1e6))


def _analysis_records(
    model: nn.Module, layers: Mapping[str, nn.Module], responding: Mapping[str, nn.Module], probe: Probe,
    settings: Settings, x: torch.Tensor, warn: Warn, meter: CostMeter, log_index: int,
    shared_impact: Optional[list] = None, shared_responses: Any = None, impact_out: Optional[dict] = None,
) -> list[Record]:
    """Perturbation records of the `responding` layers and impact records of all `layers`; one
    failing analysis warns and the others still land.
    `shared_impact`, `shared_responses`: what several ranks computed together, when they did.
    `impact_out` receives the impact analysis' per-layer arrays (feature visualization ranks by them)."""
    y = probe.labels.to(x.device) if probe.labels is not None else None
    analyses: list[tuple[str, Callable[[], dict]]] = []
    if shared_responses is not None:
        analyses.append((fmt.KIND_PERTURBATION, lambda: _raised_or(shared_responses)))
    elif settings.perturbations or settings.counterfactuals:
        analyses.append(
            (
                fmt.KIND_PERTURBATION,
                lambda: perturbation_responses(
                    model, responding, x, y, counterfactuals=settings.counterfactuals, **settings.perturbation_options
                )
                if settings.perturbations
                else counterfactual_sensitivity(model, responding, x, settings.counterfactuals),
            )
        )
    if settings.impact and shared_impact is not None:
        analyses.append((fmt.KIND_IMPACT, lambda: _merged_impact(shared_impact, settings, probe.labels.numpy(), warn)))
    elif settings.impact:
        analyses.append((fmt.KIND_IMPACT, lambda: filter_impact(model, layers, x, y, log_index=log_index, **settings.impact_options)))
    result: list[Record] = []
    for kind, run_analysis in analyses:
        try:
            with meter.part(kind):
                per_layer = run_analysis()
                if kind == fmt.KIND_IMPACT and impact_out is not None:
                    impact_out.update(per_layer)
                encoded = [(name, kind, records.analysis_record(kind, arrays)) for name, arrays in per_layer.items()]
        except Exception as e:  # noqa: BLE001 - the rest of the step still lands
            warn(f"the {kind} analysis failed ({type(e).__name__}: {e})")
            continue
        result.extend(encoded)
    return result


def _layer_records(
    plan: Plan,
    name: str,
    conv: nn.Module,
    bn: Optional[nn.Module],
    bn_name: Optional[str],
    step: int,
    full_kernels: bool,
    acts: Optional[torch.Tensor],
    maps_kept: tuple[int, Optional[int]],
    warn: Warn,
) -> list[Record]:
    w = _drift_baseline(conv)
    if not torch.isfinite(w).all():
        warn(f"layer {name!r} has NaN or infinite weights (logged as 0)")
    info = layer_info(conv)
    info["batchnorm"] = bn_name
    memory = plan.memory.get(name)
    if memory is None:
        memory = plan.memory[name] = _LayerMemory(step, w, step, w)
    stats = {k: v.numpy() for k, v in filter_stats(w).items()}
    drift_prev = weight_drift(memory.prev.numpy(), w.numpy())
    for key in records.DRIFT_PREV:
        stats[key] = drift_prev[key.removesuffix("_prev")]
    stats[records.DRIFT_FIRST] = weight_drift(memory.first.numpy(), w.numpy())["cosine_distance"]
    result = []
    if acts is not None:
        stats.update({k: v.cpu().numpy() for k, v in activation_stats(acts).items()})
        n, side = maps_kept
        maps = acts[:n] if side is None else downsample_maps(acts[:n], side)
        result.append((name, fmt.KIND_MAPS, records.maps_record(maps.float().cpu().numpy(), list(range(n)), list(acts.shape[2:]))))
    kernels = footprint = None
    if full_kernels or name in plan.every_log_kernels:
        keyframe = plan.keyframes.get(name)
        if keyframe is not None and keyframe.step >= step:
            keyframe = None  # a step logged again or going back drops what came after it, as a restart does
        kernels, footprint = _kernel_record(conv, bn, bn_name, w, keyframe)
        written = records.Keyframe.of(step, kernels)
        if written is not None:
            plan.pending_keyframes[name] = written
    filters = records.filters_record(info, memory.prev_step, memory.first_step, kernel_tiles(w).numpy(), stats, footprint)
    result.insert(0, (name, fmt.KIND_FILTERS, filters))
    if kernels is not None:
        result.append((name, fmt.KIND_KERNELS, kernels))
    memory.prev_step, memory.prev = step, w
    return result


def _kernel_record(conv: nn.Module, bn: Optional[nn.Module], bn_name: Optional[str], w: torch.Tensor,
                   keyframe: Optional[records.Keyframe]) -> tuple[bytes, dict]:
    """The kernels record, and the layer's footprint (kept in the step's small filters record)."""
    bias = conv.bias.detach().float().cpu() if conv.bias is not None else None
    scale = b_eff = None
    if bn is not None:
        gamma = bn.weight.detach().cpu() if bn.weight is not None else None
        beta = bn.bias.detach().cpu() if bn.bias is not None else None
        scale, b_eff = fold_batchnorm(bias, bn.running_mean.cpu(), bn.running_var.cpu(), gamma, beta, bn.eps)
    # Footprint of what each filter does at inference: the BatchNorm-folded kernel where there is one.
    effective = w if scale is None else w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    record = records.kernels_record(
        w.numpy(),
        bias.numpy() if bias is not None else None,
        bn_name,
        scale.numpy() if scale is not None else None,
        b_eff.numpy() if b_eff is not None else None,
        keyframe,
    )
    return record, kernel_footprint(effective, groups=conv.groups)
