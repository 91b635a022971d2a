"""Benchmark: one impact log of the ResNet-18-shaped net shared by 2 ranks vs done by 1 (goal ≤ 0.6×).

Each process runs torch on one thread (this machine has 2 cores), logs inline (`background=False`,
so the time is the analysis) with `impact=True` and no perturbations, after one warm-up log. Both
the single process and the 2-rank gloo job are measured in the same run.

    /work/venv/bin/python bench/distributed.py
    /work/venv/bin/python bench/distributed.py --images 16 --size 64
"""
from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import ResNet18Shaped  # noqa: E402
from tb_convviz import ConvViz  # noqa: E402

GOAL = 0.6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_log(logdir: str, images: int, size: int) -> float:
    """Seconds of the second impact log (the first makes the copy, traces and warms up)."""
    torch.manual_seed(0)
    model = ResNet18Shaped(classes=10).eval()
    g = torch.Generator().manual_seed(1)
    probe = (torch.randn(images, 3, size, size, generator=g), torch.arange(images) % 10)
    viz = ConvViz(logdir, probe=probe, impact=True, perturbations=False, similarity_images=0, background=False)
    viz.log(model, 0)
    start = time.perf_counter()
    viz.log(model, 1)
    seconds = time.perf_counter() - start
    viz.close()
    return seconds


def rank_main(rank: int, port: int, logdir: str, images: int, size: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(minutes=30))
    seconds = timed_log(logdir, images, size)
    if rank == 0:
        Path(out).write_text(str(seconds))
    dist.destroy_process_group()


def single_main(logdir: str, images: int, size: int, out: str) -> None:
    torch.set_num_threads(1)
    Path(out).write_text(str(timed_log(logdir, images, size)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="probe images (default: %(default)s)")
    parser.add_argument("--size", type=int, default=112, help="probe side in pixels (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        single_out, ranks_out = os.path.join(d, "single.txt"), os.path.join(d, "ranks.txt")
        p = mp.get_context("spawn").Process(target=single_main, args=(os.path.join(d, "single"), args.images, args.size, single_out))
        p.start()
        p.join()
        mp.spawn(rank_main, args=(free_port(), os.path.join(d, "ranks"), args.images, args.size, ranks_out), nprocs=2, join=True)
        one, two = float(Path(single_out).read_text()), float(Path(ranks_out).read_text())
    print(f"ResNet-18-shaped, {args.images} images at {args.size} px, impact=True, one thread per process")
    print(f"  1 process: {one:.1f} s; 2 ranks: {two:.1f} s; ratio {two / one:.2f}× (goal ≤ {GOAL}×)")


if __name__ == "__main__":
    main()
