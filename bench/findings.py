"""Findings at ResNet-50 scale: `logs.findings` over every layer of a ResNet-50-shaped net (53 conv
layers, 26,560 filters, 1000 classes) logged with impact and a counterfactual, timed against reading
every layer's filter table at the same step (the tab's Impact view of every layer, one after
another) in the same run. Goal: findings cost no more than that reading (≤ 1.5×), i.e. nothing
grows with filters × classes.

    python bench/findings.py                    # writes 2 epochs into a temp dir (minutes), then times
    python bench/findings.py --logdir runs/r50  # reuse logs written before
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from models import ResNet50Shaped
from tb_convviz import ConvViz, load
from tb_convviz.analysis import findings as rules
from tb_convviz.schema.records import IMPACT_CLEAN_PRED, IMPACT_EXACT, IMPACT_FLIPS

RUN = "resnet50"
REPEATS = 3
GOAL = 1.5


def write(logdir: Path, epochs: int, probe_n: int, side: int) -> float:
    start = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(probe_n, 3, side, side, generator=g)
    y = torch.randint(0, 1000, (probe_n,), generator=g)
    torch.manual_seed(0)
    model = ResNet50Shaped(classes=1000).eval()

    def corner(batch: torch.Tensor) -> torch.Tensor:
        out = batch.clone()
        out[..., :8, :8] = 0
        return out

    with ConvViz(str(logdir / RUN), probe=(x, y), impact={"exact_budget": 40}, perturbations=False,
                 counterfactuals={"corner": corner}, background=False) as viz:
        for epoch in range(epochs):
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 + 0.01 * torch.randn_like(p))
            viz.log(model, epoch, final=epoch == epochs - 1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", type=Path, help="logs to reuse (written there when missing)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--probe", type=int, default=32, help="probe images (default 32, at 64 px)")
    args = parser.parse_args()
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="convviz_findings_bench_"))
    if not (logdir / RUN).exists():
        print(f"writing {args.epochs} epochs of the ResNet-50-shaped net with impact to {logdir} …", flush=True)
        print(f"  {write(logdir, args.epochs, args.probe, 64):.0f} s")
    logs = load(str(logdir))
    layers = logs.layers(RUN)
    step = logs.steps(RUN, layers[0])[-1]

    def tables() -> None:
        for layer in layers:
            logs.filter_table(RUN, layer, step)

    def timed(work) -> float:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start

    # Alternated, median of REPEATS each: the first reads of a run are slower than the rest, for both.
    baseline, took = [], []
    for _ in range(REPEATS):
        baseline.append(timed(tables))
        took.append(timed(lambda: logs.findings_report(RUN, step)))
    baseline, took = statistics.median(baseline), statistics.median(took)
    tracemalloc.start()
    report = logs.findings_report(RUN, step)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"{len(layers)} layers, {report['filters']:,} filters, {len(report['probe'].get('classes', []))} classes in the probe")
    print(f"findings (median of {REPEATS}): {took:.2f} s (peak Python allocations {peak:.0f} MB); every layer's filter table: {baseline:.2f} s; "
          f"ratio {took / baseline:.2f}× (goal ≤ {GOAL}×: {'met' if took / baseline <= GOAL else 'NOT met'})")
    print("found:", {k: v for k, v in report["counts"].items() if v}, "· not looked for:", [u["kind"] for u in report["unavailable"]])
    rules_at_scale()


def rules_at_scale(filters: int = 26_560, classes: int = 1000, images: int = 256, seed: int = 0) -> None:
    """The rules a random ResNet-50 leaves idle (it gets no probe image right), on arrays of its
    size: every filter exact, 1000 classes in a 256-image probe, 20 flips a filter; profiles of 32
    images, half of them errors."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, images)
    clean = np.where(rng.random(images) < 0.6, labels, rng.integers(0, classes, images))
    flip_filter = np.repeat(np.arange(filters), 20)
    flip_image = np.argsort(rng.random((filters, images)), axis=1)[:, :20].ravel()  # 20 distinct images a filter
    arrays = {IMPACT_EXACT: np.ones(filters, bool), IMPACT_CLEAN_PRED: clean,
              IMPACT_FLIPS[0]: flip_filter, IMPACT_FLIPS[1]: flip_image, IMPACT_FLIPS[2]: rng.integers(0, classes, len(flip_filter))}
    layer = rules.LayerImpact("all", arrays)
    tracemalloc.start()
    start = time.perf_counter()
    rules.fragile_classes([layer], labels, 0.05, 0)
    fragile = time.perf_counter() - start
    profiles = {"all": rng.normal(size=(filters, 32))}
    correct = np.arange(32) % 2 == 0
    start = time.perf_counter()
    rules.fires_on_errors(profiles, correct, 0.05, 0, {"all": np.ones(filters)}, {"all": np.ones(filters)}, "")
    errors = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"rules on arrays of that size ({filters:,} exact filters, {classes} classes, {len(flip_filter):,} flips): "
          f"fragile classes {fragile:.2f} s, fires on errors {errors:.2f} s, peak Python allocations {peak:.0f} MB "
          f"(a filters × classes table would be {filters * classes * 8 / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
