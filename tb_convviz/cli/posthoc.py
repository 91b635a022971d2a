"""Log a folder of saved checkpoints after training, as if ConvViz had been in the loop.

``tb-convviz log-checkpoints --model pkg.models:build --checkpoints 'ckpts/*.pt' --probe probe.pt
--logdir runs/exp1`` or, from Python, ``log_checkpoints(build, "ckpts/*.pt", "probe.pt", "runs/exp1")``.

The records are the callback's own: one `ConvViz` logs every checkpoint in step order, the last
one with ``final=True``. It runs inline (``background=False``) so that each `log()` says whether
its step was written, while a thread reads the next checkpoint file meanwhile. A logdir that already
holds steps is continued: those steps are skipped, and drift and the full-kernel schedule go on
from the run logged before, so the records equal one online run over all the checkpoints.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TextIO, Union

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tb_convviz import storage
from tb_convviz.write.callback import ConvViz
from tb_convviz.cli.checkpoints import (
    STEP_SOURCES,
    Checkpoint,
    CheckpointError,
    StepSource,
    checkpoint_files,
    load_into,
    load_state,
    one_line,
    read_ahead,
    scan,
)
from tb_convviz.cli.options import CommandLineOptions
from tb_convviz.write.probe import Probe, make_probe
from tb_convviz.read.reader import Logs, NotFound, load

RUN = "."  # `load(logdir)` names the run whose event files sit directly in logdir "."
# ConvViz's arguments as log-checkpoints options, but those it sets itself: the logdir and the probe
# have options of their own, it analyses inline (background=False), and it logs every checkpoint
# given, so every_n_epochs would only skip some (choose them with --checkpoints instead).
_CONVVIZ_OPTIONS = CommandLineOptions(ConvViz, exclude={"log_dir_or_summary_writer", "probe", "background", "every_n_epochs"})
PathLike = Union[str, os.PathLike]


class UsageError(ValueError):
    """Nothing can be logged as asked (a bad model spec, no checkpoint, an unreadable probe, a
    logdir holding another probe's run); the CLI prints the message and exits with status 2."""


@dataclass
class Report:
    """What `log_checkpoints` did. `skipped` names every matched file that did not land, and why."""

    logdir: str
    logged: list[Checkpoint] = field(default_factory=list)  # written now, by step
    already: list[Checkpoint] = field(default_factory=list)  # their steps were in logdir before
    skipped: dict[Path, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 when every matched checkpoint is in the logdir, 1 when any was skipped."""
        return 1 if self.skipped else 0


# -- inputs ----------------------------------------------------------------------------------


def import_object(spec: str) -> Any:
    """``package.module:name`` (``name`` may be dotted) imported with the current directory on
    sys.path, as ``python -m`` has it, so a module beside the checkpoints is found."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{spec!r} is not MODULE:FUNCTION, e.g. mypackage.models:build_model")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the spec's problem, said in one line
        raise UsageError(f"cannot import {module_name!r} ({type(e).__name__}: {e})") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def read_probe(path: PathLike, *, npz: Optional[bool] = None) -> Any:
    """A probe saved with `torch.save` (images, ``(images, labels)`` or ``{"images", "labels"}``)
    or an ``.npz`` with ``images`` and optional ``labels`` (`npz` None: by the file's suffix), as
    ConvViz's `probe` argument takes it."""
    name = os.fspath(path)
    try:
        source = io.BytesIO(storage.read_bytes(name)) if storage.is_remote(name) else name
        if npz or (npz is None and name.endswith(".npz")):
            with np.load(source, allow_pickle=False) as arrays:
                probe = {key: arrays[key] for key in arrays.files}
        else:
            probe = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a missing or damaged file, said in one line
        raise UsageError(f"cannot read probe {name!r} ({one_line(e)})") from e
    if isinstance(probe, dict):
        if "images" not in probe:
            raise UsageError(f"probe {name!r} has no 'images' (it has {sorted(probe)})")
        return (probe["images"], probe["labels"]) if probe.get("labels") is not None else probe["images"]
    return tuple(probe) if isinstance(probe, list) else probe


def _build(build_model: Callable[[], nn.Module]) -> nn.Module:
    try:
        model = build_model()
    except Exception as e:  # noqa: BLE001 - the user's builder; the cause stays chained
        raise UsageError(f"building the model failed ({type(e).__name__}: {e})") from e
    if not isinstance(model, nn.Module):
        raise UsageError(f"the model builder returned {type(model).__name__}, not a torch.nn.Module")
    return model.cpu().eval()


class _CheckpointViz(ConvViz):
    """ConvViz logging saved checkpoints: after a failure, nothing trains, the next checkpoint is read."""

    AFTER_A_FAILURE = "the other checkpoints are still logged"


# -- the run logged before ---------------------------------------------------------------------


def _existing_run(logdir: PathLike) -> Optional[Logs]:
    """The convviz run written directly in `logdir`, or None when there is none yet."""
    if not storage.isdir(logdir):
        return None
    logs = load(os.fspath(logdir))
    return logs if RUN in logs.runs() else None


def _logged_steps(logs: Logs) -> set[int]:
    """Steps whose every record landed (the reader shows a step only once its commit record has)."""
    return set(logs.steps(RUN, logs.layers(RUN)[0]))


def _probe_mismatch(logs: Logs, probe: Optional[Probe]) -> Optional[str]:
    """Why the run logged before used another probe than `probe`, or None. Probe images are
    stored 8-bit per image: equal means within (max − min) / 510 of each image."""
    try:
        images, labels = logs.probe(RUN)
    except NotFound:
        images = labels = None
    if probe is None or images is None:
        return None if probe is None and images is None else ("it was logged without a probe" if images is None else "it was logged with a probe")
    ours = probe.images.numpy()
    if images.shape != ours.shape:
        return f"it was logged with a probe of shape {list(images.shape)}, not {list(ours.shape)}"
    flat = ours.reshape(len(ours), -1)
    tolerance = (flat.max(axis=1) - flat.min(axis=1)) / 510 * 1.01 + 1e-6
    if (np.abs(images.reshape(len(ours), -1) - flat).max(axis=1) > tolerance).any():
        return "it was logged with other probe images"
    ours_labels = probe.labels.numpy() if probe.labels is not None else None
    if (labels is None) != (ours_labels is None) or (labels is not None and not np.array_equal(labels, ours_labels)):
        return "it was logged with other probe labels"
    return None


def _continue_run(viz: ConvViz, model: nn.Module, first: Checkpoint, last: Checkpoint, logs_done: int,
                  keys: set[str], trust: bool) -> None:
    """Make `viz` go on from a run that logged `logs_done` steps from `first` to `last`: drift is
    measured against those two checkpoints' weights, no run record is written again, and the
    every-`kernels_every` schedule continues."""
    load_into(model, load_state(first.path, keys, trust=trust))
    first_model = copy.deepcopy(model)
    load_into(model, load_state(last.path, keys, trust=trust))
    viz.resume(first_model, first.step, model, last.step, logs_done)


# -- progress --------------------------------------------------------------------------------


class _Progress:
    """A bar with an ETA on a terminal; one plain line per checkpoint otherwise (logs, CI)."""

    def __init__(self, stream: Optional[TextIO], total: int):
        self._stream = stream
        self._total = total
        self._bar = tqdm(total=total, file=stream, unit="ckpt", dynamic_ncols=True) if stream is not None and stream.isatty() else None
        self._since = time.perf_counter()

    def say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        elif self._stream is not None:
            print(line, file=self._stream, flush=True)

    def done(self, index: int, checkpoint: Checkpoint, problem: Optional[str] = None) -> None:
        now = time.perf_counter()
        seconds, self._since = now - self._since, now
        where = f"[{index + 1}/{self._total}] {checkpoint.path.name} step {checkpoint.step}"
        if self._bar is not None:
            self._bar.set_postfix_str(checkpoint.path.name, refresh=False)
            self._bar.update()
            if problem:
                self.say(f"{where} skipped: {problem}")
        else:
            self.say(f"{where} skipped: {problem}" if problem else f"{where} ok {seconds:.1f}s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- the run -----------------------------------------------------------------------------------


def log_checkpoints(
    build_model: Callable[[], nn.Module],
    checkpoints: Union[PathLike, Sequence[PathLike]],
    probe: Any,
    logdir: PathLike,
    *,
    step_from: StepSource = "auto",
    trust_checkpoints: bool = False,
    progress: Union[bool, TextIO] = True,
    **convviz_options: Any,
) -> Report:
    """Log every checkpoint into `logdir` with ConvViz, in step order; steps already there are skipped.

    Args:
        build_model: called with no arguments, returns the model the checkpoints were saved from.
        checkpoints: file paths and/or glob patterns (``"ckpts/*.pt"``, ``"**/*.ckpt"``).
        probe: a probe file (see `read_probe`), or what ConvViz's `probe` takes, or None.
        logdir: the run's directory (ConvViz writes its event files directly in it).
        step_from: "auto" (the checkpoint's ``epoch``, else ``global_step``, else the last
            number in its name), or one of "epoch", "global_step", "name" only.
        trust_checkpoints: load with ``weights_only=False``, which can run code from the files.
        progress: True: a bar on a terminal, else a line per checkpoint, on stderr; a stream
            to write to instead; False: quiet.
        convviz_options: ConvViz's keyword arguments (layers, kernels_every, impact, ...).

    A file that cannot be read, holds no state_dict or no step, repeats a step, does not fit the
    model (strict load), comes before a step already logged (TensorBoard's fast loader would
    drop the later steps) or fails to log is named in ``Report.skipped``; the rest still land.
    Raises UsageError when nothing can be logged as asked.
    """
    stream = sys.stderr if progress is True else (progress or None)
    if step_from not in STEP_SOURCES:
        raise UsageError(f"step_from must be one of {STEP_SOURCES}, got {step_from!r}")
    if "background" in convviz_options:
        raise UsageError("background is not an option here: checkpoints are analysed inline while the next one is read")
    paths = checkpoint_files(checkpoints)
    if not paths:
        raise UsageError(f"no checkpoint file matches {checkpoints!r}")
    if isinstance(probe, (str, os.PathLike)):
        probe = read_probe(probe)
    model = _build(build_model)
    try:
        viz = _CheckpointViz(logdir, probe=probe, background=False, **convviz_options)
        probe_ = make_probe(probe)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from e
    report = Report(os.fspath(logdir))
    try:
        before = _existing_run(logdir)
        mismatch = _probe_mismatch(before, probe_) if before is not None else None
        if mismatch:
            raise UsageError(f"{os.fspath(logdir)!r} holds a run this probe does not continue: {mismatch}; log into a new logdir")
        done = _logged_steps(before) if before is not None else set()
        found, skipped = scan(paths, step_from=step_from, trust=trust_checkpoints)
        report.skipped.update(skipped)
        report.already = [c for c in found if c.step in done]
        last_done = max(done, default=None)
        todo = [c for c in found if c.step not in done]
        for c in todo:
            if last_done is not None and c.step < last_done:
                report.skipped[c.path] = (f"step {c.step} comes before step {last_done}, logged earlier: TensorBoard would "
                                          "drop the later steps; log every checkpoint into a new logdir to include it")
        todo = [c for c in todo if c.path not in report.skipped]
        shown = _Progress(stream, len(todo))
        for path, why in report.skipped.items():
            shown.say(f"{path.name} skipped: {why}")
        if report.already:
            shown.say(f"{len(report.already)} of {len(found)} checkpoints are in {os.fspath(logdir)} already; logging {len(todo)}")
        keys = set(model.state_dict())
        if todo and done:
            _resume_from(viz, model, found, done, keys, trust_checkpoints, report)
        try:
            _log_each(viz, model, todo, keys, trust_checkpoints, report, shown)
        finally:
            shown.close()
    finally:
        viz.close()
    return report


def _resume_from(viz: ConvViz, model: nn.Module, found: list[Checkpoint], done: set[int], keys: set[str],
                 trust: bool, report: Report) -> None:
    """Continue the run logged before from its first and last checkpoints, when both are given."""
    by_step = {c.step: c for c in found}
    first, last = by_step.get(min(done)), by_step.get(max(done))
    if first is None or last is None:
        report.notes.append(f"the checkpoints of steps {min(done)} and {max(done)}, logged earlier, are not all among "
                            "these: drift of the new steps is measured from the first new one")
        return
    try:
        _continue_run(viz, model, first, last, len(done), keys, trust)
    except CheckpointError as e:
        report.notes.append(f"cannot reread the checkpoints logged earlier ({e}): drift of the new steps is measured from the first new one")
    except ValueError as e:
        raise UsageError(str(e)) from e


def _log_each(viz: ConvViz, model: nn.Module, todo: list[Checkpoint], keys: set[str], trust: bool,
              report: Report, progress: _Progress) -> None:
    """Load and log each checkpoint; a thread reads the next file while this one is analysed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tb_convviz-read-ahead") as pool:
        upcoming = pool.submit(read_ahead, todo[0].path) if todo else None
        for i, checkpoint in enumerate(todo):
            assert upcoming is not None
            upcoming.result()
            upcoming = pool.submit(read_ahead, todo[i + 1].path) if i + 1 < len(todo) else None
            try:
                load_into(model, load_state(checkpoint.path, keys, trust=trust))
            except CheckpointError as e:
                report.skipped[checkpoint.path] = str(e)
                progress.done(i, checkpoint, str(e))
                continue
            try:
                written = viz.log(model, checkpoint.step, final=i == len(todo) - 1)
            except ValueError as e:  # the first log found the layers or the probe do not fit the model
                raise UsageError(str(e)) from e
            if written:
                report.logged.append(checkpoint)
                progress.done(i, checkpoint)
            else:
                why = "its analysis or writing failed (see the tb_convviz warning)"
                report.skipped[checkpoint.path] = why
                progress.done(i, checkpoint, why)


# -- the command line ------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    """Register ``log-checkpoints`` on the ``tb-convviz`` subparsers; ``args.command_function(args)`` runs it."""
    p = subparsers.add_parser(
        "log-checkpoints",
        help="log saved checkpoints into a CONVVIZ run, as if ConvViz had been in the training loop",
        description="Log saved checkpoints into a CONVVIZ run (one logdir = one run), in step order, "
        "with the records ConvViz writes during training. Steps already in the logdir are skipped, so "
        "rerunning it logs only new checkpoints. Exit status: 0 when every checkpoint landed, 1 when "
        "any was skipped (each is named, with the reason), 2 for a usage error.",
    )
    p.add_argument("--model", required=True, metavar="MODULE:FUNCTION",
                   help="function that builds the model, called with no arguments; imported with the "
                   "current directory on sys.path, e.g. mypackage.models:build_model")
    p.add_argument("--checkpoints", required=True, nargs="+", metavar="PATH_OR_GLOB",
                   help="checkpoint files or quoted glob patterns ('ckpts/*.pt', 'runs/**/*.ckpt'), each a "
                   "state_dict or a dict holding one under 'state_dict' (Lightning), 'model_state_dict' or "
                   "'model'; the model's part of a Lightning state_dict is found under its prefix ('model.'). "
                   "Of two files with the same step, the first by name is logged")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--probe", metavar="FILE",
                        help="the probe batch, saved with torch.save: images (N, C, *spatial), "
                        "(images, labels) or {'images': ..., 'labels': ...}; without a probe only "
                        "kernels and weight statistics are logged")
    source.add_argument("--probe-npz", metavar="FILE",
                        help="the probe batch as an .npz file with an 'images' array and optional 'labels'")
    p.add_argument("--logdir", required=True, metavar="DIR",
                   help="the run's directory (point TensorBoard at its parent); steps already logged there are skipped")
    p.add_argument("--step-from", choices=STEP_SOURCES, default="auto",
                   help="where each checkpoint's step comes from; auto: its 'epoch' entry, else its "
                   "'global_step', else the last number in its file name (default: auto)")
    p.add_argument("--trust-checkpoints", action="store_true",
                   help="load with torch.load(weights_only=False), for checkpoints holding custom classes; "
                   "this can run code from the files, so only for files you trust")
    _CONVVIZ_OPTIONS.add_to(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-checkpoint lines")
    p.set_defaults(command_function=run)


def _convviz_options(args: argparse.Namespace) -> dict[str, Any]:
    """ConvViz keyword arguments for the options given; the rest keep ConvViz's defaults."""
    try:
        return _CONVVIZ_OPTIONS.values(args, import_object)
    except UsageError:
        raise
    except ValueError as e:  # options that contradict each other
        raise UsageError(str(e)) from e


def run(args: argparse.Namespace) -> int:
    """The ``log-checkpoints`` command: 0 all landed, 1 some skipped, 2 a usage error."""
    try:
        options = _convviz_options(args)
        build = import_object(args.model)
        if not callable(build):
            raise UsageError(f"{args.model!r} is not callable")
        probe = read_probe(args.probe, npz=False) if args.probe else read_probe(args.probe_npz, npz=True) if args.probe_npz else None
        report = log_checkpoints(build, args.checkpoints, probe, args.logdir, step_from=args.step_from,
                                 trust_checkpoints=args.trust_checkpoints, progress=not args.quiet, **options)
    except UsageError as e:
        print(f"tb-convviz log-checkpoints: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"logged {len(report.logged)} checkpoint(s) into {report.logdir}"
          + (f"; {len(report.already)} were there already" if report.already else ""))
    for note in report.notes:
        print(f"note: {note}")
    for path, why in report.skipped.items():
        print(f"skipped {path}: {why}")
    return report.exit_status
