"""ConvViz: the one line users add to a training loop. It orchestrates; analyses live elsewhere.

`log()` takes a snapshot of the model's parameters and buffers and returns; a worker thread loads
it into a private copy of the model and runs collect → encode → write there, so training goes on
meanwhile (`background=False` runs the same steps inline, on the user's model).
"""
from __future__ import annotations

import atexit
import inspect
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz.analysis.feature_vis import visualization_shape
from tb_convviz.analysis.impact import DEFAULT_ALPHA, filter_impact
from tb_convviz.analysis.perturbation import perturbation_responses
from tb_convviz.analysis.significance import detectable_effect
from tb_convviz.analysis.turns import layer_turns
from tb_convviz.model.capture import as_model_input
from tb_convviz.write.collect import (
    RESPONSE_FILTERS, Plan, ProbeForwardFailed, Record, Settings, check_labels, chosen_layers, collect_step, first_layers,
    probe_forward, remember,
)
from tb_convviz.write.distributed import ALONE, current_shard
from tb_convviz.write.cost import ADVICE, GENERAL_ADVICE, LOADING, WRITING, CostMeter, cost_line
from tb_convviz.write.metrics import MetricFailed, MetricsArgument, check_metrics, layer_context
from tb_convviz.model.layers import (
    LayerSelector, conv_layers, filter_weights, following_activation, following_batchnorm, layer_info, unwrap,
)
from tb_convviz.model.notices import collecting
from tb_convviz.model.observe import untouched
from tb_convviz.write.probe import make_probe
from tb_convviz.model.tracing import running_models, traced
from tb_convviz.write.snapshot import ModelCopy, State, analysis_dtype, architecture_mismatch, signature, state_snapshot
from tb_convviz.write.worker import BackgroundWorker
from tb_convviz.write.visualize import check_choice, feature_vis_settings
from tb_convviz.write.writer import RecordWriter

# Fewer probe examples of a class than this, and only large per-class changes can be told from noise.
MIN_CLASS_EXAMPLES = 10

# The Gram record grows with images² per layer: 256 images is 64 KB a layer and epoch in float16.
MAX_SIMILARITY_IMAGES = 256

SLOW_ANALYSIS_HINT = (
    "analysis is slower than training: log() waited for the previous step's analysis to finish. "
    "Cheaper settings: every_n_epochs=k, perturbations=False, a smaller probe, "
    "impact={'exact_budget': ...} or analysis_device='cuda'"
)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _options(value: Any, name: str, analysis: Callable, positional: set[str]) -> dict[str, Any]:
    """Keyword options for an analysis from a True/False/dict argument, checked against its signature."""
    if isinstance(value, bool):
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be True, False or a dict of options, got {value!r}")
    allowed = set(inspect.signature(analysis).parameters) - positional
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"{name}: unknown options {unknown}; known: {sorted(allowed)}")
    return dict(value)


@dataclass
class _Job:
    """One logged step, as the worker receives it."""

    step: int
    state: Optional[State]  # the snapshot to load into the model copy; None runs on `model` as is
    copy: Optional[ModelCopy]  # the copy it loads into: the one made for the model's structure at this log
    model: Optional[nn.Module]  # inline jobs: the user's model
    full_kernels: bool
    first: bool
    responders: list[str]  # layers whose perturbation responses and profiles this step records
    since_last_log_s: Optional[float]  # training time between the previous log() and this one
    log_index: int  # logs before this one: whose turn it is at impact calibration


class ConvViz:
    """Log what every conv filter learned, each epoch, for the CONVVIZ TensorBoard tab.

    Args:
        log_dir_or_summary_writer: a log directory, or a torch ``SummaryWriter`` to share; None
            when it is known only later (`write_to`, before the first log).
        probe: the fixed batch to measure activations on: images ``(N, C, *spatial)`` or
            ``(images, labels)``. None logs kernels only.
        layers: None (every conv), a list of module names, or ``predicate(name, module)``.
        every_n_epochs: log only when ``step % every_n_epochs == 0`` (and on ``final``).
        kernels_every: full kernels every this many logs, at the first and the final one;
            the first layers (up to 131,072 weights in all) keep full kernels every log. Drift is exact
            every log.
        map_size: activation maps are average-pooled so no side exceeds this.
        map_images: activation maps are kept for at most this many probe images (stats use all).
        map_budget_mb: all layers' maps of one log fit this; sides, then images, shrink to fit.
        keep_all: keep everything: full kernels every log, full-resolution maps of every probe image.
        perturbations: log each filter's responses to oriented gratings (2-D), shift and reversal
            (1-D), Gaussian noise and FGSM/PGD attacks on the probe. A dict instead of True passes
            options to `perturbation_responses`, e.g. ``{"rotate_probe": True, "angles": 24}``.
        counterfactuals: ``{"name": edit(batch) -> batch}``; each filter's sensitivity to each edit
            (e.g. "remove the watermark") is logged with its interval over the probe images, and
            filters whose change is real (a paired test over the images, BH within the layer),
            large and far beyond their layer's are flagged.
        impact: log what the model loses without each filter (exact ablation, Taylor estimate),
            class selectivity and top activating probe examples. Needs probe labels. A dict passes
            options to `filter_impact`.
        similarity_images: the first this many probe images (at most 256; 0: off) give each layer's
            Gram matrix (linear CKA across layers, epochs and runs) and, for the first 32 of them,
            each filter's response profile (filter matching across runs, filter maps).
        response_filters: perturbation responses and response profiles are recorded for about this
            many filters a log: a larger model's layers take turns (each recorded every k-th log,
            all of them on the logs that keep full kernels), so a ResNet-50's steady log stays
            near 2 MB and its analysis time bounded. None: every layer every log.
        background: analyse in a worker thread on a private copy of the model, so `log()` costs
            only a snapshot of the weights. False (or a model that cannot be deep-copied) runs inline.
        analysis_device: where the copy lives and the analyses run (None: the model's device).
        metrics: a `FilterMetric` or a list of them: per-filter numbers of your own, computed on
            the probe at every log and shown in the tab, `load()` and every export like the
            built-in ones.
        feature_vis: the input each filter responds to most, optimised from noise (Lucent-style,
            many filters at once, the same seed every log). True: each log spends a budget of
            forward-equivalents of the probe on the filters with the largest impact or drift of
            the layers whose turn it is; "all": every filter every log; a dict sets filters
            (None, "all" or {layer: [indices]}), budget, size, steps, seed, lr, batch.

    Under torch.distributed every rank's ConvViz takes part: each ablates its share of the filters
    (on a gloo group of ConvViz's own), and rank 0 gathers the shares and alone writes.
    """

    # What a warning says carries on after a failure; post-hoc logging, where nothing trains, says its own.
    AFTER_A_FAILURE = "training goes on"

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
        impact: Union[bool, Mapping[str, Any]] = False,
        similarity_images: int = 64,
        response_filters: Optional[int] = RESPONSE_FILTERS,
        background: bool = True,
        analysis_device: Optional[Union[str, torch.device]] = None,
        metrics: MetricsArgument = None,
        feature_vis: Union[bool, Literal["all"], Mapping[str, Any]] = False,
    ):
        self.every_n_epochs = _positive_int(every_n_epochs, "every_n_epochs")
        self.kernels_every = _positive_int(kernels_every, "kernels_every")
        map_size = _positive_int(map_size, "map_size")
        map_images = _positive_int(map_images, "map_images")
        if isinstance(map_budget_mb, bool) or not isinstance(map_budget_mb, (int, float)) or not map_budget_mb > 0:
            raise ValueError(f"map_budget_mb must be a positive number, got {map_budget_mb!r}")
        if not isinstance(keep_all, bool):
            raise ValueError(f"keep_all must be True or False, got {keep_all!r}")
        if isinstance(similarity_images, bool) or not isinstance(similarity_images, (int, np.integer)) or not 0 <= similarity_images <= MAX_SIMILARITY_IMAGES:
            raise ValueError(f"similarity_images must be an integer in [0, {MAX_SIMILARITY_IMAGES}], got {similarity_images!r}")
        if response_filters is not None:
            response_filters = _positive_int(response_filters, "response_filters")
        if not isinstance(background, bool):
            raise ValueError(f"background must be True or False, got {background!r}")
        try:
            self.analysis_device = torch.device(analysis_device) if analysis_device is not None else None
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"analysis_device must name a torch device such as 'cpu' or 'cuda:0', got {analysis_device!r}") from e
        perturbation_options = _options(perturbations, "perturbations", perturbation_responses, {"model", "layers", "x", "y", "counterfactuals", "share"})
        impact_options = _options(impact, "impact", filter_impact, {"model", "layers", "x", "y", "log_index", "share"})
        if counterfactuals is not None and (
            not isinstance(counterfactuals, Mapping)
            or not all(isinstance(k, str) and k and "/" not in k and callable(v) for k, v in counterfactuals.items())
        ):
            raise ValueError('counterfactuals must map names (no "/") to callables: {"name": edit(batch) -> batch}')
        if not (layers is None or callable(layers) or isinstance(layers, (str, list, tuple, set))):
            raise ValueError(f"layers must be None, a list of module names or a predicate, got {type(layers).__name__}")
        self._layer_selector = layers
        self._probe = make_probe(probe)
        self.settings = Settings(
            keep_all=keep_all,
            map_size=map_size,
            map_images=map_images,
            map_budget_mb=float(map_budget_mb),
            perturbations=bool(perturbations),
            perturbation_options=perturbation_options,
            counterfactuals=dict(counterfactuals or {}),
            impact=bool(impact),
            impact_options=impact_options,
            similarity_images=int(similarity_images),
            response_filters=response_filters,
            metrics=tuple(check_metrics(metrics)),
            feature_vis=feature_vis_settings(feature_vis),
        )
        if (self.settings.impact or self.settings.counterfactuals) and self._probe is None:
            raise ValueError("impact and counterfactuals need a probe: pass probe=(images, labels)")
        if self.settings.feature_vis is not None and self._probe is None:
            raise ValueError("feature_vis needs a probe (its value range, colours and size): pass probe=images")
        if self.settings.metrics and self._probe is None:
            raise ValueError("metrics need a probe: pass probe=images or probe=(images, labels)")
        if self.settings.impact and self._probe.labels is None:
            raise ValueError("impact=True needs probe labels: pass probe=(images, labels)")
        self._writer: Optional[RecordWriter] = None
        self.background = background
        self._plan: Optional[Plan] = None
        self._signature: dict = {}
        self._copy: Optional[ModelCopy] = None
        self._worker: Optional[BackgroundWorker[_Job]] = None
        self._shard = ALONE
        self._buffers: list[str] = []
        self._logs_done = 0
        self._warned: set[str] = set()
        self._pending: list[tuple[str, Optional[int]]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._last_step: Optional[int] = None
        self._last_log_at: Optional[float] = None  # perf_counter of the previous log(): the training time between logs
        self._last_cost: Optional[dict] = None  # what the last written log cost, named when analysis falls behind
        self._slow_warned = False
        self._step_order_warned = False
        if log_dir_or_summary_writer is not None:
            self.write_to(log_dir_or_summary_writer)

    # -- public verbs -------------------------------------------------------------------------

    def write_to(self, log_dir_or_summary_writer: Any) -> None:
        """Choose where records go, for a ConvViz made with None: an adapter may learn its run
        folder only when training begins (the Hugging Face Trainer names it then), yet checks
        its arguments when it is made."""
        if self._writer is not None or self._plan is not None:
            raise RuntimeError("ConvViz.write_to() must come once, before the first log()")
        self._writer = RecordWriter(log_dir_or_summary_writer)
        if self._writer.live_neighbours:
            self._warn(
                f"another ConvViz is writing {self._writer.logdir!r} now: for a step both log, readers show the one "
                "committed last, and a lower step from one hides the other's later steps; give each run its own folder"
            )
            self._emit_pending(going_on=False)
        if self.settings.impact and not self._writer.earlier_writers:  # a run taken up again was told at its start
            self._check_class_sizes()

    def log(self, model: nn.Module, step: int, *, final: bool = False) -> bool:
        """Log every chosen conv layer of `model` at `step`; returns whether the step was taken.

        In the background (the default) the step is snapshotted and analysed while training goes
        on; inline, True means it was written. A configuration problem (no such layer, no conv, a
        probe the model cannot take, labels outside its classes, another architecture than the
        first log's) raises ValueError. Any later failure warns once and training goes on.
        """
        if self._closed:
            raise RuntimeError("ConvViz.log() called after close()")
        if self._writer is None:
            raise RuntimeError("ConvViz(None, ...) has nowhere to write: call write_to(log_dir) before the first log()")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"step must be an integer, got {step!r}")
        if step % self.every_n_epochs != 0 and not final:
            return False
        model = unwrap(model)
        first = self._plan is None
        if first:
            self._start(model)
        else:
            mismatch = architecture_mismatch(model, self._signature)
            if mismatch:
                raise ValueError(f"log(model): this model is not the architecture of the first log: {mismatch}")
            if self._copy is not None and not self._copy.follows(model):
                self._copy = self._new_copy(model)
        if self._last_step is not None and step <= self._last_step and not self._step_order_warned:
            self._step_order_warned = True
            self._warn(
                f"step {step} is not greater than the last logged step {self._last_step}: readers show this log for "
                "it and drop what was logged at later steps until they are logged again, as TensorBoard does for a "
                "restarted run"
            )
        self._last_step = int(step)
        full = self.settings.keep_all or final or first or self._logs_done % self.kernels_every == 0
        assert self._plan is not None
        now = time.perf_counter()
        job = _Job(
            step=int(step),
            state=state_snapshot(model) if self._copy is not None else None,
            copy=self._copy,
            model=None if self._copy is not None else model,
            full_kernels=full,
            first=first,
            responders=self._plan.responders(self._logs_done, full),
            log_index=self._logs_done,
            since_last_log_s=None if self._last_log_at is None else now - self._last_log_at,
        )
        self._last_log_at = now
        self._logs_done += 1
        if self._worker is not None:
            self._worker.submit(job)
            self._emit_pending()
            return True
        written = self._run(job)
        self._emit_pending()
        return written

    def resume(self, first: nn.Module, first_step: int, last: nn.Module, last_step: int, logs_done: int) -> None:
        """Go on from a run the log dir already holds (post-hoc logging of more checkpoints): drift
        is measured against that run's first and last logged weights, its run record is not written
        again, and the `kernels_every` schedule continues after its `logs_done` logs."""
        if self._plan is not None:
            raise RuntimeError("ConvViz.resume() must come before the first log()")
        if self._writer is None:
            raise RuntimeError("ConvViz(None, ...) has nowhere to write: call write_to(log_dir) before resume()")
        first, last = unwrap(first), unwrap(last)
        self._start(first)
        assert self._plan is not None
        remember(self._plan, first, first_step, last, last_step)
        self._logs_done = _positive_int(logs_done, "logs_done")
        self._last_step = int(last_step)
        self._writer.restart(int(last_step) + 1)  # what a crashed writer left after last_step must not show

    def on_epoch_end(self, model: nn.Module, epoch: int) -> bool:
        """Alias of `log`, named for the moment it runs."""
        return self.log(model, epoch)

    def flush(self) -> None:
        """Wait until every logged step is analysed and written."""
        if self._worker is not None:
            self._worker.flush()
        self._emit_pending()

    def close(self) -> None:
        """Finish pending steps and close convviz's event file (a shared SummaryWriter stays open)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._drain)
        if self._worker is not None:
            self._worker.stop()
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception as e:  # noqa: BLE001
            self._warn(f"closing the event file failed ({type(e).__name__}: {e})")
        self._emit_pending(going_on=False)  # closed: whatever trained is done

    def __enter__(self) -> "ConvViz":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- orchestration ------------------------------------------------------------------------

    def _check_class_sizes(self) -> None:
        """Say once, up front, when the probe has too few examples of some class for a per-class
        change to be told from noise: the tab will grey those out, and a larger probe would not."""
        assert self._probe is not None and self._probe.labels is not None
        classes, counts = np.unique(self._probe.labels.numpy(), return_counts=True)
        few = classes[counts < MIN_CLASS_EXAMPLES]
        if len(few):
            alpha = self.settings.impact_options.get("alpha", DEFAULT_ALPHA)
            shown = ", ".join(f"{c} ({n})" for c, n in zip(few[:8], counts[counts < MIN_CLASS_EXAMPLES][:8]))
            self._warn(
                f"the probe has fewer than {MIN_CLASS_EXAMPLES} examples of {len(few)} class(es) (class: examples) {shown}"
                f"{' …' if len(few) > 8 else ''}. A per-class change needs at least 6 examples to be significant, and at "
                f"{MIN_CLASS_EXAMPLES} examples only a recall change of {detectable_effect(MIN_CLASS_EXAMPLES, alpha):.0%} or more "
                "can be told from noise; add examples of these classes to the probe"
            )
            self._emit_pending(going_on=False)

    def _start(self, model: nn.Module) -> None:
        """First log: resolve the layers, make the private copy, and check the probe fits the model."""
        layers = conv_layers(model, self._layer_selector)
        with untouched(model):  # tracing runs Python forward code, which may touch buffers
            batchnorm = following_batchnorm(model, layers)
        turns = layer_turns({name: layer_info(conv)["filters"] for name, conv in layers.items()}, self.settings.response_filters)
        plan = Plan(list(layers), batchnorm, first_layers(layers), turns)
        if self.settings.feature_vis is not None:
            with untouched(model):
                plan.activation = following_activation(model, layers, batchnorm)
            check_choice(self.settings.feature_vis, {name: filter_weights(conv).shape[0] for name, conv in layers.items()})
            assert self._probe is not None
            try:
                visualization_shape(self._probe.images, self.settings.feature_vis.size)
            except ValueError as e:
                raise ValueError(f"feature_vis: {e}") from None
        # Every rank logs the same steps, so every rank gets here at the same first log.
        self._shard = current_shard()
        self._buffers = [name for name, _ in model.named_buffers()]
        dtype = analysis_dtype(model)
        if self.background:
            try:
                self._copy = ModelCopy(model, self.analysis_device, dtype)
            except Exception as e:  # noqa: BLE001 - deepcopy fails in many ways (locks, handles, ...)
                self._warn(f"the model cannot be deep-copied ({type(e).__name__}: {e}), so it is analysed inline, "
                           "pausing training at each log")
        # On a copy also: ranks analyse rank 0's buffers; half precision is analysed in float32.
        elif self.analysis_device is not None or self._shard.world > 1 or dtype is not None:
            self._copy = ModelCopy(model, self.analysis_device, dtype)
        if self._probe is not None:
            target = self._copy.model if self._copy is not None else model
            with untouched(target), running_models():
                try:
                    out, outputs = probe_forward(target, chosen_layers(target, plan), as_model_input(target, self._probe.images))
                except ProbeForwardFailed as e:
                    self._copy = None
                    raise ValueError(f"probe of shape {tuple(self._probe.images.shape)} does not fit the model: {e}") from e
                check_labels(out, self._probe)
                self._check_metrics(target, plan, outputs)
        self._plan = plan
        self._signature = signature(model)
        if self._copy is not None and self.background:
            self._trace(self._copy)
            self._worker = BackgroundWorker(self._run, self._slow, self._worker_crashed)
            atexit.register(self._drain)

    def _check_metrics(self, model: nn.Module, plan: Plan, outputs: dict[str, torch.Tensor]) -> None:
        """A metric returning the wrong shape or type fails here, at the first log, naming itself;
        one that raises is left to warn from the step that meets it."""
        assert self._probe is not None
        x = as_model_input(model, self._probe.images)
        for name, conv in chosen_layers(model, plan).items():
            ctx = layer_context(name, conv, x, outputs[name], self._probe.labels, 0, model)
            for metric in self.settings.metrics:
                if metric.applies_to(name, conv):
                    try:
                        metric.evaluate(ctx, outputs[name].shape[1])
                    except MetricFailed:
                        pass

    def _new_copy(self, model: nn.Module) -> ModelCopy:
        """A fresh copy for a model whose modules or plain attributes changed since the copy was
        made; its fx trace is made here, on the training thread (see `tracing`)."""
        copy_ = ModelCopy(model, self.analysis_device, analysis_dtype(model))
        if self._worker is not None:
            self._trace(copy_)
        return copy_

    def _trace(self, copy_: ModelCopy) -> None:
        """Exact ablation replays the copy's fx graph: traced here, on the training thread, never in
        the worker (`tracing`)."""
        if self.settings.impact:
            try:
                traced(copy_.model)
            except Exception:  # noqa: BLE001 - the analysis meets the same failure and falls back, with its notice
                pass

    def _run(self, job: _Job) -> bool:
        """collect → encode → write one step; every failure becomes one warning. True if written."""
        plan = self._plan
        assert plan is not None
        if job.state is not None and self._shard.world > 1:
            # DDP keeps parameters equal across ranks, but BatchNorm statistics drift apart between
            # forwards (each rank's own batches): every rank analyses the writing rank's.
            job.state.update(self._shard.from_writer({k: job.state[k].cpu() for k in self._buffers}))
        meter = CostMeter()
        with collecting() as notes:
            try:
                if job.state is not None:
                    assert job.copy is not None
                    with meter.part(LOADING):
                        model = job.copy.load(job.state)
                    job.copy = None
                    job.state = None  # loaded: memory for one model copy and one waiting snapshot, no more
                    with running_models():
                        records_ = self._collect(model, job, meter)
                else:
                    assert job.model is not None
                    with untouched(job.model), running_models():
                        records_ = self._collect(job.model, job, meter)
            except ProbeForwardFailed as e:
                self._warn(f"the probe forward pass failed ({e})", job.step)
                records_ = None
            except Exception as e:  # noqa: BLE001 - observers must never stop training
                self._warn(f"logging failed ({type(e).__name__}: {e})", job.step)
                records_ = None
        for note in notes:
            self._warn(note)
        if records_ is None:
            return False
        if not self._shard.writes:
            return True  # its share went to the writing rank
        assert self._writer is not None  # log() checked
        try:
            with meter.part(WRITING):
                for layer, kind, payload in records_:
                    self._writer.write(layer, kind, job.step, payload)
            cost = self._last_cost = meter.summary(job.since_last_log_s)
            self._writer.write(fmt.RUN_LAYER, fmt.KIND_COMMIT, job.step, records.commit_record(len(records_), cost))
            self._writer.flush()
        except Exception as e:  # noqa: BLE001 - a full disk must not end the training run
            self._warn(f"writing failed ({type(e).__name__}: {e}); earlier steps are intact", job.step)
            return False
        assert self._plan is not None
        self._plan.keyframes_written()
        return True

    def _collect(self, model: nn.Module, job: _Job, meter: CostMeter) -> list[Record]:
        assert self._plan is not None
        return collect_step(
            model, self._plan, self._probe, self.settings, job.step, job.full_kernels, job.first,
            lambda problem: self._warn(problem, job.step), self._shard, job.responders, meter, job.log_index,
        )

    def _slow(self) -> None:
        if not self._slow_warned:  # once: the breakdown differs from log to log
            self._slow_warned = True
            last = self._last_cost
            if last is None:
                self._warn(SLOW_ANALYSIS_HINT)
            else:
                largest = max(last["parts"], key=lambda name: last["parts"][name]["wall_s"])
                self._warn(f"{SLOW_ANALYSIS_HINT} (the last log: {cost_line(last)}; for its largest part, "
                           f"{largest}: {ADVICE.get(largest, GENERAL_ADVICE)})")
        self._emit_pending()

    def _worker_crashed(self, error: BaseException) -> None:
        self._warn(f"the background worker hit {type(error).__name__}: {error}")

    def _drain(self) -> None:
        """At interpreter exit, when the user forgot close(): write what is still pending."""
        self.close()

    def _warn(self, problem: str, step: Optional[int] = None) -> None:
        """Queue a warning, once per distinct problem: a failure that persists must not flood the
        training log. Warnings are issued from the training thread (`_emit_pending`), not the worker."""
        with self._lock:
            if problem in self._warned:
                return
            self._warned.add(problem)
            self._pending.append((problem, step))

    def _emit_pending(self, going_on: bool = True) -> None:
        """Issue queued warnings; `going_on` says what carries on after a failure (not at construction
        or at close, where nothing does)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for problem, step in pending:
            where = f" at step {step}" if step is not None else ""
            goes_on = f"{self.AFTER_A_FAILURE}, and " if going_on else ""
            warnings.warn(
                f"tb_convviz: {problem}{where}; {goes_on}this warning is not repeated",
                RuntimeWarning,
                stacklevel=3,
            )
