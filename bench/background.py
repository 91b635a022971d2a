"""Benchmark: how long `ConvViz.log()` holds up the training loop with `background=True`, and
what the background analysis of a ResNet-50-shaped net costs per epoch.

1. Blocking time of log() (the snapshot of every parameter and buffer, then a hand-off to the
   worker) on the ResNet-18-shaped and the ResNet-50-shaped nets, as a multiple of a plain
   `state_dict` clone measured in the same run (goal ≤ 3×). The worker is flushed between logs,
   so each log() finds a free slot: this is the cost training pays when analysis keeps up.
2. ResNet-50-shaped (26,560 filters, 1000 classes), a 32-image probe at 64 px, `impact=True`:
   background analysis seconds per epoch (log() to flush()), MB per epoch (event-file growth),
   how many filters were ablated exactly under the default budget, and what each log cost in
   forward-equivalents of the probe (goal ≤ 300 a log), by part, from the cost the log recorded,
   next to a bare forward of the probe timed in the same run.

    /work/venv/bin/python bench/background.py            # both parts
    /work/venv/bin/python bench/background.py --epochs 2 --skip-impact
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import ResNet18Shaped, ResNet50Shaped, perturb_weights  # noqa: E402
from tb_convviz import ConvViz, load  # noqa: E402
from tb_convviz.schema import format as fmt  # noqa: E402
from tb_convviz.schema import records  # noqa: E402

MB = 1e6
GOAL_BLOCKING_RATIO = 3.0
GOAL_FORWARDS = 300


def state_dict_clone_s(model: nn.Module, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        {k: v.detach().clone() for k, v in model.state_dict().items()}
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def blocking(model: nn.Module, probe: torch.Tensor, labels: torch.Tensor, epochs: int) -> tuple[float, float]:
    """(median log() seconds, median state_dict clone seconds), measured alternately in one run."""
    gen = torch.Generator().manual_seed(0)
    log_s, clone_s = [], []
    with tempfile.TemporaryDirectory() as d:
        viz = ConvViz(d, probe=(probe, labels), perturbations=False)
        viz.log(model, 0)  # the first log makes the model copy and checks the probe: not per epoch
        viz.flush()
        for epoch in range(1, epochs + 1):
            perturb_weights(model.parameters(), gen)
            clone_s.append(state_dict_clone_s(model, 1))
            start = time.perf_counter()
            viz.log(model, epoch)
            log_s.append(time.perf_counter() - start)
            viz.flush()
        viz.close()
    return statistics.median(log_s), statistics.median(clone_s)


def bare_forward_s(model: nn.Module, probe: torch.Tensor, repeats: int = 3) -> float:
    """Median seconds of one plain forward of the probe in eval mode: the unit of a log's cost."""
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            model(probe)
            times.append(time.perf_counter() - start)
    model.train()
    return statistics.median(times)


def impact_epochs(epochs: int) -> None:
    model = ResNet50Shaped(classes=1000)
    filters = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    gen = torch.Generator().manual_seed(1)
    probe = torch.randn(32, 3, 64, 64, generator=gen)
    labels = torch.randint(0, 1000, (32,), generator=gen)
    with tempfile.TemporaryDirectory() as d:
        viz = ConvViz(d, probe=(probe, labels), impact=True)
        sizes, seconds = [], []
        for epoch in range(epochs):
            perturb_weights(model.parameters(), gen)
            before = sum(f.stat().st_size for f in Path(d).iterdir())
            start = time.perf_counter()
            viz.log(model, epoch)
            viz.flush()
            seconds.append(time.perf_counter() - start)
            sizes.append((sum(f.stat().st_size for f in Path(d).iterdir()) - before) / MB)
        viz.close()
        logs = load(d)  # read before the folder goes: the records' bytes live in its sidecar file
        run = logs.runs()[0]
        exact = sum(int(logs.bundle(run, layer, fmt.KIND_IMPACT, epochs - 1).array(records.IMPACT_EXACT).sum()) for layer in logs.layers(run))
        costs = [logs.cost(run, epoch) for epoch in range(epochs)]
    print(f"\nResNet-50-shaped ({filters} filters, 1000 classes), 32-image probe at 64 px, impact=True, defaults")
    print(f"  background analysis per epoch: {', '.join(f'{s:.1f}' for s in seconds)} s")
    print(f"  MB per epoch: {', '.join(f'{s:.2f}' for s in sizes)} (the first keeps full kernels of every layer)")
    print(f"  filters ablated exactly at the last epoch: {exact} of {filters}")
    bare = bare_forward_s(model, probe)
    print(f"  bare probe forward in this run: {bare:.3f} s; each log's cost (goal ≤ {GOAL_FORWARDS} forward-equivalents):")
    for epoch, cost in enumerate(costs):
        parts = sorted(cost["parts"].items(), key=lambda kv: -kv[1]["wall_s"])
        print(f"    epoch {epoch}: {cost['wall_s']:.1f} s = {cost['wall_s'] / bare:.0f} bare forwards "
              f"({cost['forward_equivalents']:.0f} of the log's own probe pass) — "
              + ", ".join(f"{name} {p['wall_s'] / bare:.0f}" for name, p in parts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="logs per net for the blocking time (default: %(default)s)")
    parser.add_argument("--impact-epochs", type=int, default=2, help="epochs of the ResNet-50 impact run (default: %(default)s)")
    parser.add_argument("--skip-impact", action="store_true", help="only measure the blocking time")
    parser.add_argument("--skip-blocking", action="store_true", help="only measure the ResNet-50 impact run")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"log() blocking time with background=True vs a state_dict clone (goal ≤ {GOAL_BLOCKING_RATIO:.0f}×), "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    nets = () if args.skip_blocking else (("ResNet-18-shaped", ResNet18Shaped(10), 112, 10), ("ResNet-50-shaped", ResNet50Shaped(1000), 64, 1000))
    for name, model, size, classes in nets:
        probe = torch.randn(8, 3, size, size)
        labels = torch.arange(8) % classes
        log_s, clone_s = blocking(model, probe, labels, args.epochs)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"  {name:17s} ({params:5.1f} M params): log() {log_s * 1e3:7.1f} ms, state_dict clone {clone_s * 1e3:7.1f} ms, "
              f"ratio {log_s / clone_s:4.2f}×")
    if not args.skip_impact:
        impact_epochs(args.impact_epochs)


if __name__ == "__main__":
    main()
