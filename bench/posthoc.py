"""Benchmark: `tb-convviz log-checkpoints` throughput, in checkpoints per minute, next to a plain
`torch.load` + `load_state_dict` loop over the same files measured in the same run.

Writes 20 checkpoints of a small CNN (`bench.models.three_conv_cnn`, each a random weight step
from the previous one) and a probe of 8 images of 32 px, then times:

* baseline: ``model.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))`` per file;
* ConvViz.log alone: the same weights already in memory, logged inline (the analysis cost);
* the CLI (`tb_convviz.cli.command.main`, what ``tb-convviz log-checkpoints`` runs, in this process),
  into a fresh logdir, with defaults and with ``--no-perturbations``;
* a rerun into the finished logdir, which logs nothing (the cost of reading what is there).

Reading the next checkpoint overlaps the analysis of the current one, so the CLI should cost about
ConvViz.log alone, not the two added. Not a test: the numbers are what it prints.

    /work/venv/bin/python bench/posthoc.py                 # 20 checkpoints
    /work/venv/bin/python bench/posthoc.py --checkpoints 50 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import perturb_weights, three_conv_cnn  # noqa: E402
from tb_convviz import ConvViz  # noqa: E402
from tb_convviz.cli.command import main as cli  # noqa: E402


def write_checkpoints(folder: Path, n: int) -> list[Path]:
    """n epochs' state_dicts of one drifting model, as `epoch_NN.pt`."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = three_conv_cnn()
    paths = []
    for epoch in range(n):
        perturb_weights(model.parameters(), g)
        paths.append(folder / f"epoch_{epoch:02d}.pt")
        torch.save(model.state_dict(), paths[-1])
    return paths


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    given = ap.parse_args()
    n, repeats = given.checkpoints, given.repeats
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ckpts").mkdir()
        paths = write_checkpoints(root / "ckpts", n)
        g = torch.Generator().manual_seed(1)
        probe = (torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))
        torch.save(probe, root / "probe.pt")
        model = three_conv_cnn()

        def baseline(run: int) -> None:
            for path in paths:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

        states = [torch.load(path, map_location="cpu", weights_only=True) for path in paths]

        def log_alone(logdir: Path, count: int = n, **options: object) -> None:
            viz = ConvViz(logdir, probe=probe, background=False, **options)
            for step, state in enumerate(states[:count]):
                model.load_state_dict(state)
                viz.log(model, step, final=step == count - 1)
            viz.close()

        def run_cli(logdir: str, *extra: str) -> None:
            status = cli(["log-checkpoints", "--model", "bench.models:three_conv_cnn", "--checkpoints",
                          str(root / "ckpts" / "*.pt"), "--probe", str(root / "probe.pt"), "--logdir", logdir, "--quiet", *extra])
            assert status == 0, status

        # Warm-up, untimed: imports and first-call costs of both paths, on one checkpoint.
        log_alone(root / "warm_alone", count=1)
        run_cli(str(root / "warm_cli"), "--checkpoints", str(paths[0]))
        ways = {
            "baseline: torch.load + load_state_dict": baseline,
            "ConvViz.log alone, defaults": lambda run: log_alone(root / f"alone{run}"),
            "CLI, defaults": lambda run: run_cli(str(root / f"cli{run}")),
            "ConvViz.log alone, perturbations=False": lambda run: log_alone(root / f"alone_plain{run}", perturbations=False),
            "CLI, --no-perturbations": lambda run: run_cli(str(root / f"cli_plain{run}"), "--no-perturbations"),
            "CLI rerun, nothing new to log": lambda run: run_cli(str(root / "cli0")),
        }
        # Interleaved repeats, median: this machine is shared, so one pass mostly measures its neighbours.
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for run in range(repeats):
            for name, way in ways.items():
                seconds[name].append(timed(lambda: way(run)))
        results = {name: statistics.median(values) for name, values in seconds.items()}
        logdir_mb = sum(f.stat().st_size for f in (root / "cli0").iterdir()) / 1e6
    base = results["baseline: torch.load + load_state_dict"]
    print(f"{n} checkpoints of three_conv_cnn, probe 8 x 3 x 32 x 32, {torch.get_num_threads()} torch thread(s), "
          f"median of {repeats} interleaved runs")
    print(f"{'':42s} {'seconds':>8s} {'ckpt/min':>10s} {'x baseline time':>16s}")
    for name, median in results.items():
        print(f"{name:42s} {median:8.2f} {60 * n / median:10.0f} {median / base:16.1f}")
    rerun = results["CLI rerun, nothing new to log"]
    print(f"rerun: reading the {logdir_mb:.1f} MB logdir back (tb_convviz.load) dominates: {rerun / logdir_mb:.2f} s per MB")
    for plain, alone in (("CLI, defaults", "ConvViz.log alone, defaults"),
                         ("CLI, --no-perturbations", "ConvViz.log alone, perturbations=False")):
        print(f"{plain}: {results[plain] / results[alone]:.2f} x ConvViz.log alone "
              f"(reading {(results[plain] - results[alone]) / n * 1e3:+.1f} ms per checkpoint beyond the analysis)")


if __name__ == "__main__":
    main()
