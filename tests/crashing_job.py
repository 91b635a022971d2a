"""A training job that the crash tests kill with SIGKILL while it writes.

Run as ``python crashing_job.py LOGDIR FROM TO VERSION [--kill STEP RECORD [--torn]] [--resume LAST] [--shared]``:
it logs steps FROM..TO of a small CNN whose weights at each step are a function of (step, VERSION),
so a test can rebuild any step's weights and tell two versions of a step apart. With ``--kill`` it
stops before the RECORD-th record of STEP (-1: its commit record), after writing half of that
record with ``--torn``, prints READY and waits to be killed. With ``--resume`` it first takes up a
run whose steps up to LAST were logged by version 0 (`ConvViz.resume`). With ``--shared`` it
writes through a SummaryWriter of its own, as the README shows, and logs a scalar each step.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import OrderedDict

import torch
from torch import nn

from tb_convviz import ConvViz
from tb_convviz.schema import format as fmt
from tb_convviz.write.writer import RecordWriter, record_summary, tfrecord
from tensorboard.compat.proto import event_pb2
from torch.utils.tensorboard import SummaryWriter


def model_at(step: int, version: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        c1=nn.Conv2d(3, 4, 3), r1=nn.ReLU(), c2=nn.Conv2d(4, 6, 3), r2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), head=nn.Linear(6, 3),
    ))
    noise = torch.Generator().manual_seed(1 + version)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * (step + 1) * torch.randn(p.shape, generator=noise))
    return model


def probe() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(12, 3, 10, 10, generator=g), torch.arange(12) % 3


def stop_at(step: int, record: int, torn: bool) -> None:
    """Make RecordWriter.write wait to be killed at the chosen record."""
    real = RecordWriter.write
    counts: dict[int, int] = {}

    def write(self: RecordWriter, layer: str, kind: str, at: int, payload: bytes) -> None:
        n = counts.get(at, 0)
        counts[at] = n + 1
        if at == step and (n == record or (record < 0 and kind == fmt.KIND_COMMIT)):
            if torn:
                event = event_pb2.Event(wall_time=0.0, step=at, summary=record_summary(layer, kind, payload))
                data = tfrecord(event.SerializeToString())
                self._open()
                os.write(self._fd, data[: len(data) // 2])
            print("READY", flush=True)
            time.sleep(600)
        real(self, layer, kind, at, payload)

    RecordWriter.write = write


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("logdir")
    parser.add_argument("first", type=int)
    parser.add_argument("last", type=int)
    parser.add_argument("version", type=int)
    parser.add_argument("--kill", nargs=2, type=int)
    parser.add_argument("--torn", action="store_true")
    parser.add_argument("--resume", type=int)
    parser.add_argument("--shared", action="store_true", help="share a SummaryWriter, logging 'loss' = step + 10 × version")
    args = parser.parse_args()
    if args.kill:
        stop_at(*args.kill, args.torn)
    writer = SummaryWriter(args.logdir) if args.shared else None
    viz = ConvViz(writer or args.logdir, probe=probe(), impact=True, background=False)
    if args.resume is not None:
        viz.resume(model_at(0, 0), 0, model_at(args.resume, 0), args.resume, args.resume + 1)
    for step in range(args.first, args.last + 1):
        if writer is not None:
            writer.add_scalar("loss", step + 10 * args.version, step)
            writer.flush()
        viz.log(model_at(step, args.version), step)
    viz.close()
    if writer is not None:
        writer.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    sys.exit(main())
