"""Benchmark: bytes per epoch of a ResNet-50-shaped net logged with the defaults, by record kind.

ResNet-50-shaped (26,560 filters, 1000 classes), a 32-image probe at 64 px, `background=False`
(the same records, written before log() returns), the weights taking a random step each epoch.
Prints each epoch's bytes (read back from the event file, by record kind) and the mean of the
steady epochs, the ones that keep only the first layers' full kernels, against the goal: 2 MB
without impact, 4 MB with `--impact` (slow on a CPU: minutes an epoch), and as a ratio to the
baseline of saving the conv kernels each epoch (one float32 copy of every conv weight).

    /work/venv/bin/python bench/record_bytes.py                 # 5 epochs, no impact
    /work/venv/bin/python bench/record_bytes.py --impact --epochs 2
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import ResNet50Shaped, perturb_weights  # noqa: E402
from tb_convviz import ConvViz  # noqa: E402
from tb_convviz.schema import format as fmt  # noqa: E402
from tb_convviz.schema import groups, sidecar  # noqa: E402

MB = 1e6
GOAL_MB = {False: 2.0, True: 4.0}


def _record_length(payload: bytes) -> int:
    """A record's bytes: the event's payload, or what its sidecar reference points to."""
    found = sidecar.parse_reference(payload)
    return len(payload) if found is None else found.length


def bytes_by_step_and_kind(logdir: str) -> dict[int, collections.Counter]:
    """{step: {kind: bytes}} of every convviz record in the log dir's event files."""
    out: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != fmt.PLUGIN_NAME:
                    continue
                for payload in value.tensor.string_val:
                    for kind, stored in groups.stored_records(value.tag, payload):
                        out[event.step][kind] += _record_length(stored)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="epochs to log (default: %(default)s; the first keeps every full kernel)")
    parser.add_argument("--impact", action="store_true", help="log with impact=True (defaults otherwise)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = ResNet50Shaped(classes=1000)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    filters = sum(m.out_channels for m in convs)
    kernels_mb = sum(m.weight.numel() * 4 for m in convs) / MB
    gen = torch.Generator().manual_seed(1)
    probe = (torch.randn(32, 3, 64, 64, generator=gen), torch.randint(0, 1000, (32,), generator=gen))
    with tempfile.TemporaryDirectory() as d:
        with ConvViz(d, probe=probe, impact=args.impact, background=False) as viz:
            for epoch in range(args.epochs):
                perturb_weights(model.parameters(), gen)
                viz.log(model, epoch)
        sizes = bytes_by_step_and_kind(d)
    print(f"ResNet-50-shaped ({filters} filters, 1000 classes), 32-image probe at 64 px, defaults, impact={args.impact}")
    for step, kinds in sorted(sizes.items()):
        parts = ", ".join(f"{k} {v / MB:.2f}" for k, v in kinds.most_common() if v >= 0.005 * MB)
        print(f"  epoch {step}: {sum(kinds.values()) / MB:.2f} MB ({parts})")
    steady = [sum(k.values()) / MB for s, k in sorted(sizes.items()) if s > 0]
    if steady:
        goal = GOAL_MB[args.impact]
        mean = statistics.mean(steady)
        print(f"  steady epochs: mean {mean:.2f} MB, max {max(steady):.2f} MB (goal ≤ {goal:.0f} MB: "
              f"{'met' if max(steady) <= goal else 'NOT met'}); {1e6 * mean / filters:.0f} bytes a filter; "
              f"{mean / kernels_mb:.3f}× the baseline of saving every conv kernel in float32 ({kernels_mb:.1f} MB an epoch)")


if __name__ == "__main__":
    main()
