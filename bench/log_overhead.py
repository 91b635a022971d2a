"""Benchmark: what one `ConvViz.log()` costs per epoch, in seconds and in event-file megabytes,
next to "the tutorial way" of logging the same content with torch's SummaryWriter.add_image.

For a small CNN (32 px input) and a ResNet-18-shaped net (112 px), on a probe of 8 images, each
epoch perturbs every weight a little (so nothing is cached or repeated) and then logs with:

* convviz (defaults): `ConvViz(dir, probe=(images, labels))`, all defaults, perturbation
  responses included;
* convviz, perturbations=False: the same content as the tutorial way (kernels, activations);
* tutorial: per conv layer, a make_grid-style image of its kernels (each filter's first ≤3 input
  channels, else their mean, normalized per tile) and, for every probe image, a grid of every
  filter's activation map, each written with SummaryWriter.add_image (PNG).

Seconds are the median over the epochs; MB per epoch is event-file growth, mean and max over the
epochs (convviz keeps full kernels of large layers only every `kernels_every` logs, so epochs
differ). Targets: the ResNet-18-shaped net at ≤ 2 MB per epoch, and log() at ≤ 1/3 of the
tutorial way's time. Not a test: the numbers are what it prints.

    /work/venv/bin/python bench/log_overhead.py                 # both models, 10 epochs
    /work/venv/bin/python bench/log_overhead.py --epochs 5 --models resnet18
    # what other defaults would cost (bytes do not depend on machine load):
    /work/venv/bin/python bench/log_overhead.py --models resnet18 --ways convviz convviz_plain --convviz map_images=2

Besides the table it prints where each log() spends its time (probe forward, TensorBoard's
pure-Python CRC-32C of the bytes written, the perturbation analyses), the bytes per record
kind and array, and the long-run MB/epoch for the kernels_every in use. Last, per model, the
default perturbation set's time as a multiple of the bare passes it needs (the same images
through the model without hooks or reductions, plus the attacks' gradient passes), timed
alternately in the same run; target ≤ 1.5×.
"""
from __future__ import annotations

import argparse
import cProfile
import math
import inspect
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import ResNet18Shaped, five_conv_bn_cnn, perturb_weights  # noqa: E402
from tb_convviz import ConvViz  # noqa: E402
from tb_convviz.schema import format as fmt  # noqa: E402

MB = 1e6
TARGET_RESNET_MB = 2.0
DEFAULT_KERNELS_EVERY = inspect.signature(ConvViz).parameters["kernels_every"].default
TARGET_TIME_FRACTION = 1 / 3
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class BenchModel:
    key: str
    title: str
    build: Callable[[], nn.Module]
    image_size: int


MODELS = {
    "small": BenchModel("small", "small CNN, 32 px", five_conv_bn_cnn, 32),
    "resnet18": BenchModel("resnet18", "ResNet-18-shaped, 112 px", ResNet18Shaped, 112),
}


# ---------------------------------------------------------------- the tutorial way


def make_grid(tiles: torch.Tensor, padding: int = 2) -> torch.Tensor:
    """torchvision.utils.make_grid(tiles, nrow=ceil(sqrt(n)), normalize=True, scale_each=True):
    (n, c, h, w) → (c, H, W) in [0, 1], each tile min-max normalized on its own."""
    n, c, h, w = tiles.shape
    flat = tiles.reshape(n, -1)
    lo = flat.min(dim=1, keepdim=True).values
    span = (flat.max(dim=1, keepdim=True).values - lo).clamp_min(1e-5)
    tiles = ((flat - lo) / span).reshape(n, c, h, w)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.zeros(c, rows * (h + padding) + padding, cols * (w + padding) + padding)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top : top + h, left : left + w] = tiles[i]
    return grid


def kernel_display_tiles(weight: torch.Tensor) -> torch.Tensor:
    """What tutorials draw per filter: the input channels as RGB when there are 3, else their mean."""
    return weight if weight.shape[1] in (1, 3) else weight.mean(dim=1, keepdim=True)


def log_tutorial_way(writer: SummaryWriter, model: nn.Module, probe: torch.Tensor, step: int) -> None:
    """Kernel grid per conv layer, and per probe image a grid of every filter's map, as PNG images."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, CONV_TYPES)}
    maps: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: maps.__setitem__(name, out.detach()))
        for name, m in convs.items()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for name, conv in convs.items():
        writer.add_image(f"{name}/kernels", make_grid(kernel_display_tiles(conv.weight.detach().float())), step)
        for i, image_maps in enumerate(maps[name]):
            writer.add_image(f"{name}/activations/image_{i}", make_grid(image_maps.unsqueeze(1)), step)
    writer.flush()


# ---------------------------------------------------------------- measuring


@dataclass
class Series:
    """Per-epoch seconds and event-file bytes of one way of logging."""

    way: str
    seconds: list[float] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mean_mb(self) -> float:
        return statistics.fmean(self.bytes) / MB

    @property
    def max_mb(self) -> float:
        return max(self.bytes) / MB


def tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def convviz_bytes_by_array(logdir: str) -> dict[str, int]:
    """Bytes per "kind/array" (e.g. "kernels/effective_kernel") across every event file under `logdir`;
    "<kind>/(header)" is each bundle's JSON header, "(tensorboard framing)" the event protos around
    them, "(group headers)" what lists a layer's records in its event of the step, and "(sidecar
    references)" the events' pointers to records kept in a sidecar file."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from tb_convviz.read.store import RecordStore
    from tb_convviz.schema import groups, sidecar

    store = RecordStore(logdir)
    totals: dict[str, int] = defaultdict(int)
    for d, _, files in os.walk(logdir):
        for f in files:
            if "tfevents" not in f:
                continue
            for event in EventFileLoader(os.path.join(d, f)).Load():
                totals["(tensorboard framing)"] += event.ByteSize() + 16  # + TFRecord length and CRCs
                for value in event.summary.value:
                    for payload in value.tensor.string_val:
                        totals["(tensorboard framing)"] -= len(payload)
                        stored_records = groups.stored_records(value.tag, payload)
                        if groups.is_group_tag(value.tag):
                            totals["(group headers)"] += len(payload) - sum(len(blob) for _, blob in stored_records)
                        for kind, blob in stored_records:
                            if sidecar.parse_reference(blob) is not None:
                                totals["(sidecar references)"] += len(blob)
                            record = store.record_bytes(os.path.relpath(d, logdir), blob)
                            arrays = fmt.decode_bundle(record)._header  # the bench reads the layout, not the values
                            for name, h in arrays.items():
                                totals[f"{kind}/{name}"] += h["nbytes"]
                            totals[f"{kind}/(header)"] += len(record) - sum(h["nbytes"] for h in arrays.values())
    return dict(totals)


def crc_seconds_per_mb() -> float:
    """TensorBoard's event writer checksums every record with a pure-Python CRC-32C (no TensorFlow)."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data = os.urandom(1_000_000)
    start = time.perf_counter()
    masked_crc32c(data)
    return (time.perf_counter() - start) / (len(data) / MB)


def bare_forward_seconds(model: nn.Module, images: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        model(images)
    model.train(was_training)
    return time.perf_counter() - start


# perturbation_responses' own functions that its time splits into (cProfile's cumulative time)
PERTURBATION_PARTS = {
    "adversarial_inputs": "attack gradient passes",
    "run": "combined hooked passes",
}
TARGET_PERTURBATION_RATIO = 1.5


def perturbation_shares(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Share of `perturbation_responses` time spent in each of PERTURBATION_PARTS (one cProfile'd call)."""
    from tb_convviz.analysis import perturbation
    from tb_convviz.analysis.perturbation import perturbation_responses
    from tb_convviz.model.layers import conv_layers
    from tb_convviz.model.notices import collecting
    from tb_convviz.model.observe import untouched

    profiler = cProfile.Profile()
    with untouched(model), collecting():  # the analysis' caveats were printed by the timed runs already
        layers = conv_layers(model, None)
        profiler.enable()
        perturbation_responses(model, layers, images, labels)
        profiler.disable()
    entries = pstats.Stats(profiler).stats.items()  # type: ignore[attr-defined]
    package = os.path.dirname(perturbation.__file__)
    cumulative = {func: ct for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in entries if path.startswith(package)}
    total = cumulative.get("perturbation_responses", 0.0) or 1e-9
    return {label: cumulative[func] / total for func, label in PERTURBATION_PARTS.items() if func in cumulative}


@dataclass
class PerturbationOverhead:
    """Wall and CPU seconds of `perturbation_responses` and of the bare passes it needs, timed alternately."""

    passes: list[tuple[int, bool]]  # (images, with input gradient) of every model call it makes
    seconds: list[float] = field(default_factory=list)
    bare_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    bare_cpu_seconds: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.seconds) / statistics.median(self.bare_seconds)

    @property
    def cpu_ratio(self) -> float:
        """The same ratio in this process's CPU time, which other processes' load barely moves."""
        return statistics.median(self.cpu_seconds) / statistics.median(self.bare_cpu_seconds)


def perturbation_overhead(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, repeats: int) -> PerturbationOverhead:
    """The default perturbation set against the bare passes it needs, measured in the same run.

    A forward pre-hook on the model records every call one `perturbation_responses` makes: its
    images and whether it takes an input gradient (the attacks). The bare replay pushes the same
    numbers of images in the same passes, without hooks or reductions: no-grad forwards, and
    forward + torch.autograd.grad of the cross-entropy for the gradient passes.
    """
    from tb_convviz.analysis.perturbation import perturbation_responses
    from tb_convviz.model.layers import conv_layers
    from tb_convviz.model.observe import untouched

    layers = conv_layers(model, None)
    passes: list[tuple[int, bool]] = []
    with untouched(model):
        handle = model.register_forward_pre_hook(lambda _m, inputs: passes.append((inputs[0].shape[0], torch.is_grad_enabled())))
        try:
            perturbation_responses(model, layers, images, labels)
        finally:
            handle.remove()
        result = PerturbationOverhead(passes)
        gen = torch.Generator().manual_seed(2)
        inputs = [(torch.randn(n, *images.shape[1:], generator=gen), grad) for n, grad in passes]

        def bare() -> None:
            for x, grad in inputs:
                if grad:
                    xr = x.requires_grad_(True)
                    torch.autograd.grad(nn.functional.cross_entropy(model(xr), labels[: len(x)]), xr)
                else:
                    with torch.no_grad():
                        model(x)

        for _ in range(repeats):  # alternating, so machine load hits both alike
            for run, wall, cpu in (
                (lambda: perturbation_responses(model, layers, images, labels), result.seconds, result.cpu_seconds),
                (bare, result.bare_seconds, result.bare_cpu_seconds),
            ):
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
    return result


def report_perturbation_overhead(spec: BenchModel, overhead: PerturbationOverhead) -> None:
    no_grad = [n for n, grad in overhead.passes if not grad]
    with_grad = [n for n, grad in overhead.passes if grad]
    print(f"  perturbation_responses (defaults), {spec.title}: {statistics.median(overhead.seconds):.3f} s; "
          f"the bare passes it needs {statistics.median(overhead.bare_seconds):.3f} s "
          f"({sum(no_grad)} images in {len(no_grad)} no-grad passes {no_grad}, "
          f"{len(with_grad)} gradient passes of {with_grad[0] if with_grad else 0} images; "
          f"median of {len(overhead.seconds)})")  # fmt: skip
    verdict = "MET" if overhead.ratio <= TARGET_PERTURBATION_RATIO else "MISSED"
    print(f"  target perturbation_responses ≤ {TARGET_PERTURBATION_RATIO:g}× its bare passes: {verdict} "
          f"({overhead.ratio:.2f}× in wall time, {overhead.cpu_ratio:.2f}× in CPU time)")  # fmt: skip


WAYS = ("convviz", "convviz_plain", "tutorial")
WAY_LABELS = {
    "convviz": "convviz, defaults",
    "convviz_plain": "convviz, perturbations=False",
    "tutorial": "tutorial (add_image grids)",
}


def bench_model(spec: BenchModel, ways: list[str], epochs: int, n_images: int, root: str, options: dict) -> dict[str, Series]:
    """Log `epochs` times with each way, interleaved; every way also gets a bare probe forward ("forward")."""
    torch.manual_seed(0)
    model = spec.build()
    images = torch.randn(n_images, 3, spec.image_size, spec.image_size)
    labels = torch.arange(n_images) % 10
    generator = torch.Generator().manual_seed(1)
    loggers: dict[str, Callable[[int], object]] = {}
    closers: list[Callable[[], None]] = []
    for way in ways:
        logdir = os.path.join(root, spec.key, way)
        if way == "tutorial":
            writer = SummaryWriter(logdir)
            loggers[way] = lambda step, w=writer: log_tutorial_way(w, model, images, step)
            closers.append(writer.close)
        else:
            # Inline (background=False): log() then does the analysis work this bench measures, and
            # the event file has grown by the step's bytes when it returns.
            kwargs = {"background": False, **options}
            if way == "convviz_plain":
                kwargs["perturbations"] = False
            viz = ConvViz(logdir, probe=(images, labels), **kwargs)
            loggers[way] = lambda step, v=viz: v.log(model, step)
            closers.append(viz.close)
    loggers["forward"] = lambda step: bare_forward_seconds(model, images)  # the floor every way pays
    series = {way: Series(way) for way in loggers}
    for epoch in range(epochs):
        perturb_weights(model.parameters(), generator)
        for way, log in loggers.items():  # interleaved, so machine load hits every way alike
            logdir = os.path.join(root, spec.key, way)
            before = tree_bytes(logdir)
            start = time.perf_counter()
            log(epoch)
            series[way].seconds.append(time.perf_counter() - start)
            series[way].bytes.append(tree_bytes(logdir) - before)
        print(
            f"  epoch {epoch}: "
            + "  ".join(f"{w} {s.seconds[-1]:.3f}s {s.bytes[-1] / MB:.3f}MB" for w, s in series.items() if w != "forward"),
            flush=True,
        )
    for close in closers:
        close()
    return series


def report(
    spec: BenchModel, series: dict[str, Series], root: str, epochs: int, options: dict, shares: dict[str, float], crc_s_mb: float
) -> None:
    n_convs = sum(isinstance(m, CONV_TYPES) for m in spec.build().modules())
    print(f"\n{spec.title}: {epochs} epochs, {n_convs} conv layers, {series['forward'].median_s:.3f}s bare probe forward")
    print(f"  {'way':32s} {'log() s (median)':>17s} {'MB/epoch mean':>14s} {'MB/epoch max':>13s}")
    ours_ways = [w for w in ("convviz", "convviz_plain") if w in series]
    for way in (*ours_ways, "tutorial"):
        if way in series:
            s = series[way]
            print(f"  {WAY_LABELS[way]:32s} {s.median_s:17.3f} {s.mean_mb:14.3f} {s.max_mb:13.3f}")
    tut = series.get("tutorial")
    fwd = series["forward"]

    def crc(s: Series) -> float:
        return statistics.median(s.bytes) / MB * crc_s_mb

    if tut is not None:
        for way in ours_ways:
            s = series[way]
            print(f"  tutorial/ours, {WAY_LABELS[way]}: time {tut.median_s / s.median_s:.2f}x, MB {tut.mean_mb / s.mean_mb:.2f}x")
    print("  where the median log() goes (s; CRC = tensorboard's pure-Python CRC-32C of the bytes written):")
    if "convviz_plain" in series:
        plain = series["convviz_plain"]
        # convviz frames its own event files with the C crc32c package: no pure-Python CRC share.
        rest = max(plain.median_s - fwd.median_s, 0)
        print(f"    {WAY_LABELS['convviz_plain']}: probe forward {fwd.median_s:.3f}, stats/quantize/encode/write (C CRC) {rest:.3f}")
        if "convviz" in series:
            ours = series["convviz"]
            print(f"    {WAY_LABELS['convviz']}: the above + perturbation analyses {max(ours.median_s - plain.median_s, 0):.3f}")
    if tut is not None:
        print(f"    {WAY_LABELS['tutorial']}: probe forward {fwd.median_s:.3f}, CRC {crc(tut):.3f}, "
              f"grids + PNG encoding {max(tut.median_s - fwd.median_s - crc(tut), 0):.3f}")
    if shares:
        print("    perturbation analyses split: " + ", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])))
    for way in ours_ways:
        by_array = convviz_bytes_by_array(os.path.join(root, spec.key, way))
        total = sum(by_array.values()) or 1
        top = sorted(by_array.items(), key=lambda kv: -kv[1])[:8]
        print(f"  {WAY_LABELS[way]}, MB/epoch by kind/array: " + ", ".join(f"{k} {v / epochs / MB:.3f} ({v / total:.0%})" for k, v in top))
        every = options.get("kernels_every", DEFAULT_KERNELS_EVERY)
        run = LongRun.of(series[way].bytes, every)
        print(f"    a run of {every + 1} logs (kernels_every={every}): {run.first_logs_mb:.3f} MB/epoch; a long run "
              f"{run.long_run_mb:.3f} (first log {run.first / MB:.3f} MB: every full kernel, its keyframes; steady "
              f"{run.steady / MB:.3f}; later full-kernel logs {run.later / MB:.3f}, changes from the keyframes"
              f"{'' if run.later_measured else f' — not measured here (--epochs {every + 1}): counted as the first'})")
    for way in ours_ways:
        s = series[way]
        if tut is not None:
            verdict = "MET" if s.median_s <= TARGET_TIME_FRACTION * tut.median_s else "MISSED"
            print(f"  target log() ≤ 1/3 of the tutorial's time, {WAY_LABELS[way]}: {verdict} ({s.median_s / tut.median_s:.2f} of it)")
        if spec.key == "resnet18":
            every = options.get("kernels_every", DEFAULT_KERNELS_EVERY)
            run = LongRun.of(s.bytes, every)
            verdict = "MET" if run.first_logs_mb <= TARGET_RESNET_MB else "MISSED"
            print(f"  target ≤ {TARGET_RESNET_MB:g} MB/epoch over a run of {every + 1} logs, {WAY_LABELS[way]}: {verdict} "
                  f"({run.first_logs_mb:.3f}; mean of these {epochs} epochs {s.mean_mb:.3f}, worst epoch {s.max_mb:.3f})")


@dataclass
class LongRun:
    """Bytes of a run's logs by what they keep: the first log (every layer's full kernels, which
    become keyframes), the steady ones, and the later full-kernel logs (stored as changes)."""

    first: float
    steady: float
    later: float
    later_measured: bool
    every: int

    @classmethod
    def of(cls, sizes: list[float], every: int) -> "LongRun":
        steady = statistics.median(sizes[1:every] or sizes)
        later = sizes[every] if len(sizes) > every else sizes[0]
        return cls(sizes[0], steady, later, len(sizes) > every, every)

    @property
    def first_logs_mb(self) -> float:
        """Mean over the first every + 1 logs: the first, every − 1 steady, the next full-kernel one."""
        return (self.first + (self.every - 1) * self.steady + self.later) / (self.every + 1) / MB

    @property
    def long_run_mb(self) -> float:
        return ((self.every - 1) * self.steady + self.later) / self.every / MB


def parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE ConvViz keyword overrides, values read as Python literals (kernels_every=20)."""
    import ast

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--convviz option {pair!r} is not KEY=VALUE")
        options[key] = ast.literal_eval(value)
    return options


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="logs per way and model (default: %(default)s)")
    parser.add_argument("--images", type=int, default=8, help="probe images (default: %(default)s)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["small", "resnet18"])
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS), help="ways of logging to compare (default: all)")
    parser.add_argument("--convviz", nargs="*", default=[], metavar="KEY=VALUE",
                        help="ConvViz option overrides to try, e.g. kernels_every=20 map_images=2 (default: none)")  # fmt: skip
    parser.add_argument("--no-split", action="store_true",
                        help="skip the profiled split of the perturbation analyses and their ratio to bare passes")
    parser.add_argument("--ratio-repeats", type=int, default=3,
                        help="alternating timings of perturbation_responses and its bare passes (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.images < 1 or args.ratio_repeats < 1:
        parser.error("--epochs, --images and --ratio-repeats must be at least 1")
    try:
        options = parse_options(args.convviz)
    except (ValueError, SyntaxError) as e:
        parser.error(str(e))
    crc_s_mb = crc_seconds_per_mb()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; ConvViz options: {options or 'defaults'}; tensorboard's pure-Python CRC-32C: "
        f"{crc_s_mb:.3f} s/MB"
    )
    with tempfile.TemporaryDirectory(prefix="convviz_bench_") as root:
        for key in args.models:
            spec = MODELS[key]
            print(f"\n== {spec.title}", flush=True)
            series = bench_model(spec, args.ways, args.epochs, args.images, root, options)
            shares = {}
            if "convviz" in args.ways and not args.no_split and options.get("perturbations", True):
                torch.manual_seed(0)
                images = torch.randn(args.images, 3, spec.image_size, spec.image_size)
                shares = perturbation_shares(spec.build(), images, torch.arange(args.images) % 10)
            report(spec, series, root, args.epochs, options, shares, crc_s_mb)
            if "convviz" in args.ways and not args.no_split:
                torch.manual_seed(0)
                images = torch.randn(args.images, 3, spec.image_size, spec.image_size)
                overhead = perturbation_overhead(spec.build(), images, torch.arange(args.images) % 10, args.ratio_repeats)
                report_perturbation_overhead(spec, overhead)


if __name__ == "__main__":
    main()
