"""A real DistributedDataParallel job on CPU (gloo), for tests/test_distributed.py: every rank
trains a tiny net with ConvViz(impact=True, metrics=[HOYER]) in its loop, rank 0 saves the weights it logged.

    python tests/ddp_job.py LOGDIR OUTDIR [--fail-rank R]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from models import two_conv_net  # noqa: E402
from user_metrics import HOYER  # noqa: E402

from tb_convviz import ConvViz  # noqa: E402
from tb_convviz.write import collect  # noqa: E402

EPOCHS = 3
WORLD = 2


def probe() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(12, 3, 8, 8, generator=g), torch.arange(12) % 3


def run(rank: int, port: int, logdir: str, outdir: str, fail_rank: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    if rank == fail_rank:
        def broken(*args, **kwargs):
            raise ArithmeticError(f"rank {rank} cannot ablate")

        collect.filter_impact = broken  # this rank's share of the ablation fails
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(two_conv_net((6, 8), classes=3))
    viz = ConvViz(logdir, probe=probe(), impact=True, counterfactuals={"dim": lambda b: 0.5 * b}, metrics=[HOYER])
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(EPOCHS):
            for _ in range(2):
                x, y = torch.randn(8, 3, 8, 8, generator=data), torch.randint(0, 3, (8,), generator=data)
                model.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()  # the training's own all-reduce
                with torch.no_grad():
                    for p in model.parameters():
                        p -= 0.3 * p.grad
            if rank == 0:
                torch.save(model.module.state_dict(), os.path.join(outdir, f"weights{epoch}.pt"))
            viz.log(model, epoch)  # in the background: the next epoch's all-reduce overlaps the gather
        viz.close()
    # Parameters only: BatchNorm statistics follow each rank's own batches by design.
    torch.save({k: p.detach() for k, p in model.module.named_parameters()}, os.path.join(outdir, f"final{rank}.pt"))
    with open(os.path.join(outdir, f"warnings{rank}.json"), "w") as f:
        json.dump([str(w.message) for w in caught], f)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("logdir")
    parser.add_argument("outdir")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-rank", type=int, default=-1)
    args = parser.parse_args()
    mp.spawn(run, args=(args.port, args.logdir, args.outdir, args.fail_rank), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
