"""Small CNNs with planted truths for the findings that tests/planted_findings.py does not plant
(`harmful`, `fires_on_errors`, `texture`, `settled`), each trained a few steps and logged with the
real ConvViz, for tests/test_findings_planted.py. Each builder takes a `broken` flag that removes
the planted structure, so the tests can show they fail without it.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from training import one_thread, sgd_step

CLASSES = 4
SIDE = 12
MARK = 4  # the saboteur's marker: a checkerboard in the top-left corner of its own channel
SABOTEUR, WRONG_CLASS = 4, 3
VICTIMS = 10  # marked images of classes 0–2, all called WRONG_CLASS: the probe's only errors
EPOCHS = 3


class SabotagedNet(nn.Module):
    """Filter c (c < 4) reads channel c, the one bright in class c, and votes for class c. The
    SABOTEUR reads a zero-mean checkerboard on channel 4 (blank in clean images) and votes hard for
    WRONG_CLASS: every marked image is called WRONG_CLASS, and zeroing the saboteur calls them
    right again (`harmful`, Δaccuracy = +VICTIMS / probe), while it fires on exactly the errors
    (`fires_on_errors`). `broken`: the saboteur has no vote, so nothing is misclassified."""

    def __init__(self, broken: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(CLASSES + 1, CLASSES + 1, 3, padding=1)
        self.head = nn.Linear(CLASSES + 1, CLASSES)
        w = torch.zeros(CLASSES + 1, CLASSES + 1, 3, 3)
        for c in range(CLASSES):
            w[c, c, 1, 1] = 1.0
        w[SABOTEUR, CLASSES] = torch.tensor([[1.0, -1.25, 1.0], [-1.25, 1.0, -1.25], [1.0, -1.25, 1.0]])
        head = torch.zeros(CLASSES, CLASSES + 1)
        head[range(CLASSES), range(CLASSES)] = 8.0
        head[WRONG_CLASS, SABOTEUR] = 0.0 if broken else 40.0
        with torch.no_grad():
            self.conv.weight.copy_(w)
            self.conv.bias.zero_()
            self.head.weight.copy_(head)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _class_images(labels: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.rand(len(labels), CLASSES + 1, SIDE, SIDE, generator=g)
    x[torch.arange(len(labels)), labels] += 1.0
    return x


def _mark(x: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    r = torch.arange(MARK)
    out[:, CLASSES, :MARK, :MARK] = ((r[:, None] + r[None, :]) % 2 == 0).to(x.dtype) * 2.0
    return out


def sabotage_probe() -> tuple[torch.Tensor, torch.Tensor]:
    """VICTIMS marked images of classes 0–2 first (the response profiles take the first 32 images,
    and their rank test needs errors among them), then 10 clean images of each class."""
    victim_labels = torch.arange(VICTIMS) % (CLASSES - 1)
    labels = torch.arange(CLASSES).repeat(10)
    x = torch.cat([_mark(_class_images(victim_labels, 2)), _class_images(labels, 1)])
    return x, torch.cat([victim_labels, labels])


def write_sabotaged_run(logdir: Path, broken: bool = False) -> Path:
    """SabotagedNet, EPOCHS epochs of a few SGD steps on clean images, each logged with exact impact."""
    from tb_convviz import ConvViz

    torch.manual_seed(0)
    model = SabotagedNet(broken)
    train_labels = torch.arange(CLASSES).repeat(16)
    train = _class_images(train_labels, 3)
    with one_thread(), ConvViz(str(logdir), probe=sabotage_probe(), impact={"exact": "all"}, background=False,
                               perturbations=False) as viz:
        for epoch in range(EPOCHS):
            for _ in range(3):
                sgd_step(model, train, train_labels, 0.01)
            viz.log(model, epoch)
    return logdir


# -- texture vs shape -----------------------------------------------------------------------

TEX_SIDE = 32
TEXTURE_LAYER, SHAPE_LAYER = "texture", "shape"


def _checker_bank() -> torch.Tensor:
    """8 pixel-checkerboard detectors (a 2×2 [[1, −1], [−1, 1]] at the four offsets of a 3×3
    window, both signs): blind to flat regions and to horizontal and vertical edges, so a blur
    silences them and a patch shuffle, which keeps the texture, does not."""
    w = torch.zeros(8, 1, 3, 3)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    for k, (i, j) in enumerate((i, j) for i in range(2) for j in range(2)):
        w[k, 0, i : i + 2, j : j + 2] = checker
        w[k + 4, 0, i : i + 2, j : j + 2] = -checker
    return w


def _edge_bank() -> torch.Tensor:
    """8 smooth edge detectors (derivatives of a σ = 2 Gaussian in 8 directions, 9×9): blind to the
    pixel texture, they see the blob's smooth slopes, which a patch shuffle cuts into
    steps and a 1-pixel blur keeps."""
    r = torch.arange(9, dtype=torch.float32) - 4
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    g = torch.exp(-(xx**2 + yy**2) / 8)
    angles = [k * math.pi / 8 for k in range(8)]
    return torch.stack([(-(math.cos(a) * xx + math.sin(a) * yy) * g / 4)[None] for a in angles])


class TextureShapeNet(nn.Module):
    """Two parallel conv layers on one grey image: TEXTURE_LAYER the checkerboard detectors,
    SHAPE_LAYER the smooth edge detectors; a head reads both's mean |response|. `broken`: the
    texture layer gets the edge detectors too."""

    def __init__(self, broken: bool = False) -> None:
        super().__init__()
        bank = _edge_bank() if broken else _checker_bank()
        self.texture = nn.Conv2d(1, 8, bank.shape[-1], padding=bank.shape[-1] // 2)
        self.shape = nn.Conv2d(1, 8, 9, padding=4)
        self.head = nn.Linear(16, 2)
        with torch.no_grad():
            self.texture.weight.copy_(bank)
            self.texture.bias.zero_()
            self.shape.weight.copy_(_edge_bank())
            self.shape.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.texture(x).abs().mean(dim=(2, 3)), self.shape(x).abs().mean(dim=(2, 3))]
        return self.head(torch.cat(features, 1))


def textured_blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images: a soft blob (a Gaussian of σ 5 for class 0, 9 for class 1, at a jittered
    centre: its outline is smooth, so cutting it into shuffled patches makes edges everywhere) on
    a pixel checkerboard texture."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    r = torch.arange(TEX_SIDE, dtype=torch.float32)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    centre = TEX_SIDE / 2 + 4 * (torch.rand(n, 2, generator=g) - 0.5)
    sigma = torch.where(labels == 0, 5.0, 9.0)
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    texture = 0.3 * (((yy + xx) % 2) * 2 - 1)
    x = torch.exp(-d2 / (2 * sigma[:, None, None] ** 2)) + texture + 0.02 * torch.randn(n, TEX_SIDE, TEX_SIDE, generator=g)
    return x[:, None], labels


def write_texture_run(logdir: Path, broken: bool = False) -> Path:
    """TextureShapeNet, a few SGD steps, logged with the shape–texture counterfactuals."""
    from tb_convviz import ConvViz

    torch.manual_seed(0)
    model = TextureShapeNet(broken)
    x, y = textured_blobs(32, 1)
    train, train_labels = textured_blobs(32, 2)
    with one_thread(), ConvViz(str(logdir), probe=(x, y), background=False,
                               perturbations={"shape_texture": True}) as viz:
        for epoch in range(2):
            for _ in range(2):
                sgd_step(model, train, train_labels, 1e-3)
            viz.log(model, epoch)
    return logdir


# -- settled --------------------------------------------------------------------------------

SETTLED_EPOCHS = 6
STEPS, STEP = 20, 0.05  # steps an epoch, and each step's length in weight space
# Images mix this many random patterns: with fewer, every layer's Gram is the mixing weights' and
# CKA stays ~1 whatever the weights; with none (white noise) the Gram is its diagonal, likewise.
PATTERNS = 16
FREEZE_AFTER = 1  # `early` trains in epochs 0 and 1, then is frozen


class TwoStage(nn.Module):
    """Two convs in a row; the head only makes it a classifier the probe runs through."""

    def __init__(self) -> None:
        super().__init__()
        self.early = nn.Conv2d(3, 8, 3, padding=1)
        self.late = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.late(torch.relu(self.early(x))))
        return self.head(h.mean(dim=(2, 3)))


def write_settled_run(logdir: Path, broken: bool = False) -> Path:
    """TwoStage over SETTLED_EPOCHS logged epochs, each fitting `late`'s output to the sum of two
    of `early`'s channels, two others each epoch (a task that keeps moving, so `late` never
    settles), with `early` frozen (requires_grad=False) after epoch FREEZE_AFTER. Steps are of a
    fixed length (a normalised gradient), so both layers move at a known pace and never diverge,
    on any seed tried. `broken`: `early` is never frozen."""
    from tb_convviz import ConvViz

    g = torch.Generator().manual_seed(5)
    patterns = torch.randn(PATTERNS, 3 * 10 * 10, generator=g)  # images mix a few patterns: structure to change
    probe = (torch.randn(48, PATTERNS, generator=g) @ patterns).view(48, 3, 10, 10) / PATTERNS**0.5
    train = (torch.randn(64, PATTERNS, generator=g) @ patterns).view(64, 3, 10, 10) / PATTERNS**0.5
    torch.manual_seed(5)
    model = TwoStage()
    with one_thread(), ConvViz(str(logdir), probe=probe, background=False, perturbations=False) as viz:
        for epoch in range(SETTLED_EPOCHS):
            task = torch.zeros(8, 8, 3, 3)
            task[:, torch.randperm(8, generator=g)[:2], 1, 1] = 1.0  # every output: two of early's channels
            for _ in range(STEPS):
                model.zero_grad()
                h = torch.relu(model.early(train))
                target = nn.functional.conv2d(h.detach(), task, padding=1)
                nn.functional.mse_loss(model.late(h), target).backward()
                with torch.no_grad():
                    for p in model.parameters():
                        if p.grad is not None:
                            p -= STEP * p.grad / p.grad.norm().clamp_min(1e-12)
            viz.log(model, epoch)
            if epoch == FREEZE_AFTER and not broken:
                model.early.requires_grad_(False)
    return logdir
