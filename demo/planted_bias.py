"""ConvViz demo with a planted shortcut: can the CONVVIZ tab find the filter that learned it?

The digits demo's data and CNN, with one change to the training set: most training images of
one class (digit 3 by default) carry a small bright checkerboard in the top-left corner, and no
other training image does. The test images never carry it. A CNN takes such a shortcut
eagerly: paste the marker onto test images of other classes and many of them become "3".

ConvViz logs two counterfactuals on the probe, "remove marker" (the corner filled with
background) and "add marker" (the marker pasted onto every image), and impact=True. The filters
that react to the edits far more than the rest of their layer are flagged; this script reads
them back with `tb_convviz.load` and prints them, and the tab's Impact view shows the same.

    python demo/planted_bias.py              # 1 run x 6 epochs (< 1 min on 2 cores), serve
    python demo/planted_bias.py --no-serve   # train, log and report only
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from demo_common import (
    RunResult,
    Split,
    accuracy,
    add_common_arguments,
    check_common_arguments,
    demo_parser,
    run_demo,
    train_runs,
)
from digits import DigitsCNN, load_digits_split

COUNTERFACTUALS = ("remove marker", "add marker")


@dataclass(frozen=True)
class Marker:
    """A `size`×`size` checkerboard of 1-pixel squares in the top-left corner of (N, C, H, W) images.

    `on` is the brightest pixel value of the data, `off` its background: the marker is as bright
    as the strokes, and erasing it leaves plain background.
    """

    size: int
    on: float
    off: float

    def add(self, images: torch.Tensor) -> torch.Tensor:
        """A copy of `images` with the marker pasted in."""
        out = images.clone()
        r = torch.arange(self.size, device=images.device)
        checker = (r[:, None] + r[None, :]) % 2 == 0
        out[..., : self.size, : self.size] = torch.where(checker, self.on, self.off).to(images.dtype)
        return out

    def remove(self, images: torch.Tensor) -> torch.Tensor:
        """A copy of `images` with the marker's corner filled with background."""
        out = images.clone()
        out[..., : self.size, : self.size] = self.off
        return out


@dataclass
class BiasedData:
    train: Split  # `rate` of the target class's images marked, no other image
    test: Split  # clean
    marker: Marker
    target: int
    marked_train: int


def plant_marker(target: int = 3, rate: float = 0.9, size: int = 6, seed: int = 0) -> BiasedData:
    """The digits demo's (N, 1, 32, 32) split with the marker on `rate` of the train images of `target`."""
    train, test = load_digits_split(seed=seed)
    marker = Marker(size, on=train.x.max().item(), off=train.x.min().item())
    candidates = torch.nonzero(train.y == target).squeeze(1)
    generator = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[: round(rate * len(candidates))]]
    x = train.x.clone()
    x[chosen] = marker.add(x[chosen])
    return BiasedData(Split(x, train.y), test, marker, target, len(chosen))


def marker_probe(data: BiasedData, marked_others: int = 12, marked_target: int = 4, per_class: int = 3) -> tuple[Split, int]:
    """Labelled test images for ConvViz, marked ones first; returns them and how many are marked.

    `marked_others` test images of other digits (spread over them) and `marked_target` of the
    target get the marker, their true labels kept: the first are the shortcut's victims. Then
    `per_class` clean images of every digit. The front alternates victim, target, victim, target,
    because ConvViz keeps the activation maps of the first four probe images.
    """
    test, target = data.test, data.target
    others = torch.nonzero(test.y != target).squeeze(1)
    others = others[torch.linspace(0, len(others) - 1, marked_others).long()]
    targets = torch.nonzero(test.y == target).squeeze(1)[-marked_target:]
    pairs = min(2, len(others), len(targets))
    front = torch.stack([others[:pairs], targets[:pairs]], 1).flatten()
    marked = torch.cat([front, others[pairs:], targets[pairs:]])
    clean = torch.cat([torch.nonzero(test.y == c).squeeze(1)[:per_class] for c in range(10)])
    probe = Split(
        torch.cat([data.marker.add(test.x[marked]), test.x[clean]]), torch.cat([test.y[marked], test.y[clean]])
    )
    return probe, len(marked)


def predicted_as(model: nn.Module, images: torch.Tensor, label: int) -> float:
    """Fraction of `images` the model (in eval mode; its mode restored) predicts as `label`."""
    return accuracy(model, Split(images, torch.full((len(images),), label)))


@dataclass
class Reliance:
    """How much the model leans on the marker, on the clean test set."""

    target_recall: float  # test images of the target class predicted as it, no marker anywhere
    clean_rate: float  # other-class test images predicted as the target
    marked_rate: float  # the same images with the marker pasted in

    def describe(self) -> str:
        return (
            f"target recall {self.target_recall:6.2%}  others->target {self.clean_rate:6.2%} clean, "
            f"{self.marked_rate:6.2%} with marker"
        )


def marker_reliance(model: nn.Module, data: BiasedData) -> Reliance:
    test, target = data.test, data.target
    others = test.x[test.y != target]
    return Reliance(
        target_recall=predicted_as(model, test.x[test.y == target], target),
        clean_rate=predicted_as(model, others, target),
        marked_rate=predicted_as(model, data.marker.add(others), target),
    )


@dataclass
class FlaggedFilter:
    """A filter that reacts to a marker edit far more than the rest of its layer."""

    layer: str
    filter: int
    change: dict[str, tuple[float, float]]  # flagged edit -> (relative change of mean |activation|, robust z)
    d_accuracy: float  # probe accuracy without the filter − with it (exact ablation)
    top_labels: list[int]  # labels of its top activating probe examples, strongest first
    top_marked: int  # how many of those carry the marker

    def describe(self) -> str:
        edits = ", ".join(f"{name} {c:+.1%} (z {z:.1f})" for name, (c, z) in self.change.items())
        return (
            f"{self.layer} filter {self.filter}: {edits}; ablation Δaccuracy {self.d_accuracy:+.1%}; "
            f"top examples {self.top_marked}/{len(self.top_labels)} marked, labels {self.top_labels}"
        )


def flagged_filters(logdir: str, run: str, step: int, marked: int) -> dict[str, list[FlaggedFilter]]:
    """Per layer, the filters either marker edit flags at `step`, most sensitive first, read back
    with `tb_convviz.load` as any notebook could. Probe images 0..marked-1 carry the marker."""
    from tb_convviz import load

    logs = load(logdir)
    found: dict[str, list[FlaggedFilter]] = {}
    for layer in logs.layers(run):
        responses = {name: logs.tuning(run, layer, step, name) for name in COUNTERFACTUALS}
        impact = logs.impact(run, layer, step)
        top = logs.top_examples(run, layer, step)
        flagged = sorted(
            set().union(*(np.flatnonzero(r["flag"]).tolist() for r in responses.values())),
            key=lambda f: -max(float(r["z"][f]) for r in responses.values()),
        )
        found[layer] = [
            FlaggedFilter(
                layer,
                f,
                {name: (float(r["change"][f]), float(r["z"][f])) for name, r in responses.items() if r["flag"][f]},
                float(impact["d_accuracy"][f]),
                [int(v) for v in top["label"][f]],
                int((top["index"][f] < marked).sum()),
            )
            for f in flagged
        ]
    return found


@dataclass
class BiasResult:
    run: RunResult
    reliance: Reliance  # of the trained model
    flagged: dict[str, list[FlaggedFilter]]  # per layer, in model order


def train(
    logdir: str = "runs/convviz_bias",
    *,
    epochs: int = 6,
    runs: int = 1,
    seed: int = 0,
    target: int = 3,
    rate: float = 0.9,
    marker_size: int = 6,
    width: int = 16,
    lr: float = 1e-2,
    batch_size: int = 32,
    log: Callable[[str], None] = print,
) -> list[BiasResult]:
    """Plant the marker, train `runs` models logged to `logdir/seed<k>`, report the flagged filters."""
    data = plant_marker(target, rate, marker_size, seed)
    probe, marked = marker_probe(data)
    log(
        f"digits: {len(data.train.y)} train images, {data.marked_train} of them ({rate:.0%} of digit {target}) "
        f"with a {marker_size}x{marker_size} checkerboard in the top-left corner; {len(data.test.y)} clean test images"
    )
    log(f"probe: {len(probe.y)} labelled test images, the first {marked} with the marker pasted in")
    models: list[nn.Module] = []

    def build() -> nn.Module:
        models.append(DigitsCNN(width))
        return models[-1]

    def report(model: nn.Module) -> str:
        return f"train acc {accuracy(model, data.train):6.2%}  {marker_reliance(model, data).describe()}"

    runs_done = train_runs(
        build,
        data.train,
        data.test,
        logdir,
        runs=runs,
        seed=seed,
        log=log,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        probe=(probe.x, probe.y),
        convviz_options={
            "counterfactuals": {"remove marker": data.marker.remove, "add marker": data.marker.add},
            "impact": True,
        },
        report=report,
    )
    results = []
    for run, model in zip(runs_done, models):
        reliance = marker_reliance(model, data)
        flagged = flagged_filters(logdir, run.run, epochs, marked)
        log(
            f"\n{run.run}: other digits predicted as {target}: {reliance.clean_rate:.1%} clean, "
            f"{reliance.marked_rate:.1%} with the marker pasted in; recall of {target} on clean test images "
            f"{reliance.target_recall:.1%}"
        )
        log(f"Filters the marker edits flag at epoch {epochs} (they react far more than the rest of their layer):")
        for layer, filters in flagged.items():
            log(f"  {layer}: none" if not filters else "\n".join(f"  {f.describe()}" for f in filters))
        results.append(BiasResult(run, reliance, flagged))
    return results


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = demo_parser(
        "Plant a shortcut and find it with the CONVVIZ tab. Most training images of one digit get a\n"
        "small checkerboard in the top-left corner; no test image has it. A small CNN (the digits\n"
        "demo's) learns to read the marker: pasted onto other digits, it turns many into the target.\n"
        "ConvViz logs the counterfactuals \"remove marker\" and \"add marker\" and each filter's impact;\n"
        "the filters they flag are printed, and the tab's Impact view shows them (sort by the\n"
        "\"remove marker\" column, click the flagged row). Under a minute on 2 CPU cores.",
        "python demo/planted_bias.py --epochs 6 --target 3 --logdir runs/convviz_bias",
        probe="46 labelled test images, the first 16 with the marker pasted in",
    )
    add_common_arguments(parser, epochs=6, logdir="runs/convviz_bias", runs=1)
    parser.add_argument("--target", type=int, default=3, help="the digit whose training images carry the marker (default: %(default)s)")
    parser.add_argument(
        "--rate", type=float, default=0.9, help="fraction of the target's training images marked (default: %(default)s)"
    )
    parser.add_argument("--marker-size", type=int, default=6, help="side of the checkerboard in pixels of 32 (default: %(default)s)")
    parser.add_argument("--width", type=int, default=16, help="filters in the first conv (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak Adam learning rate (default: %(default)s)")
    args = parser.parse_args(argv)
    check_common_arguments(parser, args)
    if not 0 <= args.target <= 9:
        parser.error(f"--target must be a digit 0-9, got {args.target}")
    if not 0 < args.rate <= 1:
        parser.error(f"--rate must be in (0, 1], got {args.rate}")
    if not 1 <= args.marker_size <= 16:
        parser.error(f"--marker-size must be 1-16 pixels, got {args.marker_size}")
    if args.width < 1:
        parser.error(f"--width must be at least 1, got {args.width}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> list[BiasResult]:
    args = parse_args(argv)
    return run_demo(
        args, train, target=args.target, rate=args.rate, marker_size=args.marker_size, width=args.width, lr=args.lr
    )


if __name__ == "__main__":
    main(sys.argv[1:])
