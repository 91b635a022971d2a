"""Benchmark: the bytes the similarity records (each layer's Gram matrix over the first N probe
images, and the filters' response profiles) add to each logged epoch of the ResNet-18-shaped net.

Logs the same net, probe and weight steps twice, inline, with perturbations=False: once with
`similarity_images=N` (default 64) and once with `similarity_images=0`, and prints the event-file
growth per epoch of both and the difference (goal ≤ 0.3 MB per epoch at N = 64). The first log
keeps full kernels of every layer, so growth is measured over the epochs after it. Bytes do not
depend on machine load. Not a test: the numbers are what it prints.

    /work/venv/bin/python bench/similarity.py                  # N = 64, 112 px, 4 epochs
    /work/venv/bin/python bench/similarity.py --images 128 --epochs 3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import ResNet18Shaped, perturb_weights  # noqa: E402
from tb_convviz import ConvViz  # noqa: E402

MB = 1e6
GOAL_MB = 0.3


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def growth_per_epoch(logdir: Path, images: torch.Tensor, labels: torch.Tensor, epochs: int, similarity_images: int) -> list[int]:
    """Event-file bytes each log after the first adds (the same seeds every call, so the weights match)."""
    torch.manual_seed(0)
    model = ResNet18Shaped(classes=10)
    generator = torch.Generator().manual_seed(1)
    sizes = []
    with ConvViz(str(logdir), probe=(images, labels), perturbations=False, similarity_images=similarity_images,
                 background=False) as viz:
        for epoch in range(epochs):
            perturb_weights(model.parameters(), generator)
            viz.log(model, epoch)
            sizes.append(tree_bytes(logdir))
    return [b - a for a, b in zip(sizes, sizes[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64, help="probe images, all used for the Gram (default 64)")
    parser.add_argument("--size", type=int, default=112, help="probe side in px (default 112)")
    parser.add_argument("--epochs", type=int, default=4, help="logs per setting, the first not counted (default 4)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, args.size, args.size, generator=generator)
    labels = torch.arange(args.images) % 10
    with tempfile.TemporaryDirectory() as root:
        on = growth_per_epoch(Path(root, "on"), images, labels, args.epochs, args.images)
        off = growth_per_epoch(Path(root, "off"), images, labels, args.epochs, 0)
    mean_on, mean_off = sum(on) / len(on) / MB, sum(off) / len(off) / MB
    added = mean_on - mean_off
    print(f"ResNet-18-shaped (20 conv layers), probe {args.images} × {args.size} px, perturbations=False, "
          f"{len(on)} epochs after the first")
    print(f"  similarity_images={args.images}: {mean_on:.3f} MB/epoch ({', '.join(f'{b / MB:.3f}' for b in on)})")
    print(f"  similarity_images=0:  {mean_off:.3f} MB/epoch ({', '.join(f'{b / MB:.3f}' for b in off)})")
    print(f"  Gram + profile records add {added:.3f} MB/epoch "
          f"(goal ≤ {GOAL_MB} MB at N = 64: {'ok' if added <= GOAL_MB else 'OVER'})")


if __name__ == "__main__":
    main()
