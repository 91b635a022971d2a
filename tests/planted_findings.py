"""A small CNN with planted truths for the findings (tests/test_findings.py, the browser test and the
report test), trained a few steps and logged with the real ConvViz.

Images are 4-channel 12×12; class c is a bright channel c. The conv layer "conv" has 8 filters:
0 and 1 read channel 0 with the same kernel (an exact copy: `duplicate` (0, 1)); 2 and 3 read
channel 1 with different kernels (redundant: neither is needed alone); NEEDED reads channel 2 and
alone carries class 2 (`needed` and `fragile_class`, naming class 2; its top examples are all class
2, so also a `class_detector`); 5 reads channel 3 (class 3); MARKER is a zero-mean checkerboard
detector on channel 3 that carries the corner marker every class-3 image wears there (`shortcut`
under the marker edits, pushing predictions towards class 3); DEAD is zero (`dead`). A linear head
reads the channels' global means.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training import one_thread, sgd_step

NEEDED, NEEDED_CLASS = 4, 2
MARKER, MARKER_CLASS = 6, 3
DEAD = 7
COPY = (0, 1)
CLASSES = 4
SIDE = 12
MARK = 4  # the marker's side, in the top-left corner
LAYER = "conv"
VICTIMS = 6
EPOCHS = 3


class PlantedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(CLASSES, 8, 3, padding=1)
        self.head = nn.Linear(8, CLASSES)
        w = torch.zeros(8, CLASSES, 3, 3)
        centre = torch.zeros(3, 3)
        centre[1, 1] = 1.0
        cross = torch.zeros(3, 3)
        cross[1, :] = 0.5
        cross[:, 1] = 0.5
        w[0, 0] = centre
        w[1, 0] = centre  # an exact copy of filter 0
        w[2, 1] = centre
        w[3, 1] = cross
        w[NEEDED, 2] = centre
        w[5, 3] = centre
        checker = torch.tensor([[1.0, -1.25, 1.0], [-1.25, 1.0, -1.25], [1.0, -1.25, 1.0]])
        w[MARKER, MARKER_CLASS] = checker  # zero-mean: flat input gives 0, the marker a lot
        head = torch.zeros(CLASSES, 8)
        head[0, 0] = head[0, 1] = 4.0
        head[1, 2] = head[1, 3] = 4.0
        head[2, NEEDED] = 8.0
        head[3, 5] = 8.0
        head[3, MARKER] = 40.0
        with torch.no_grad():
            self.conv.weight.copy_(w)
            self.conv.bias.zero_()
            self.head.weight.copy_(head)
            self.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))  # nothing seen: class 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def of_kind(found: list[dict], kind: str) -> list[dict]:
    """The findings of one kind, in the order `logs.findings` ranked them."""
    return [f for f in found if f["kind"] == kind]


def add_marker(x: torch.Tensor) -> torch.Tensor:
    """A checkerboard in the top-left corner of channel 3 (the marked class's own channel)."""
    out = x.clone()
    r = torch.arange(MARK)
    out[:, MARKER_CLASS, :MARK, :MARK] = ((r[:, None] + r[None, :]) % 2 == 0).to(x.dtype) * 2.0
    return out


def remove_marker(x: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    out[:, MARKER_CLASS, :MARK, :MARK] = 0.0
    return out


def images(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Class c: channel c at 1 (plus a little noise everywhere); class 3 carries the marker."""
    g = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.rand(len(labels), CLASSES, SIDE, SIDE, generator=g)
    x[torch.arange(len(labels)), labels] += 1.0
    marked = labels == MARKER_CLASS
    x[marked] = add_marker(x[marked])
    return x


def probe(per_class: int = 10, victims: int = VICTIMS) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` images of each class, then `victims` class-0 and class-1 images with the marker
    pasted in (the model calls them 3: the shortcut's victims)."""
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    x = images(labels, 1)
    victim_labels = torch.arange(victims) % 2
    v = add_marker(images(victim_labels, 2))
    return torch.cat([x, v]), torch.cat([labels, victim_labels])


def write_planted_run(logdir: Path, probe_images: int | None = None) -> Path:
    """Train PlantedNet EPOCHS epochs of a few SGD steps, logging each with impact and the marker
    counterfactuals; `probe_images` keeps only the first that many probe images (spread over classes)."""
    torch.manual_seed(0)
    model = PlantedNet()
    x, y = probe()
    if probe_images is not None:
        order = torch.arange(len(y) - VICTIMS).view(CLASSES, -1).T.flatten()  # one of each class in turn
        x, y = x[order[:probe_images]], y[order[:probe_images]]
    train_labels = torch.arange(CLASSES).repeat(16)
    train = images(train_labels, 3)
    from tb_convviz import ConvViz

    with one_thread(), ConvViz(str(logdir), probe=(x, y), impact={"exact": "all"}, background=False,
                               counterfactuals={"remove marker": remove_marker, "add marker": add_marker}) as viz:
        for epoch in range(EPOCHS):
            for _ in range(3):
                sgd_step(model, train, train_labels, 0.01)
            viz.log(model, epoch, final=epoch == EPOCHS - 1)
    return logdir


class FiveByFive(nn.Module):
    """A 5×5 conv trained to reproduce a 3×3 filter bank (its outer ring learns nothing), then a 3×3."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(1, 4, 5, padding=2, bias=False)
        self.narrow = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.narrow(self.wide(x))


def write_kernel_size_run(logdir: Path) -> Path:
    """Fit FiveByFive.wide to a fixed random 3×3 filter bank on white noise, logging as it trains."""
    from tb_convviz import ConvViz

    g = torch.Generator().manual_seed(4)
    target = torch.zeros(4, 1, 5, 5)
    target[:, :, 1:4, 1:4] = torch.randn(4, 1, 3, 3, generator=g)
    x = torch.randn(64, 1, 16, 16, generator=g)
    y = nn.functional.conv2d(x, target, padding=2)
    torch.manual_seed(4)
    model = FiveByFive()
    with one_thread(), ConvViz(str(logdir), probe=x[:16], background=False, perturbations=False) as viz:
        for epoch in range(EPOCHS):
            for _ in range(20):
                model.zero_grad()
                nn.functional.mse_loss(model.wide(x), y).backward()
                with torch.no_grad():
                    model.wide.weight -= 1.0 * model.wide.weight.grad
            viz.log(model, epoch, final=epoch == EPOCHS - 1)
    return logdir
