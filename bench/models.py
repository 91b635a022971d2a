"""The nets bench/impact.py and bench/log_overhead.py run on, and the random weight step that
stands in for an epoch of training.

Shared by bench/impact.py, bench/log_overhead.py and bench/dashboard.py, which import it as
`bench.models` (each puts the repository root on sys.path, so `python bench/X.py` works from
anywhere, and so does `python -m bench.X` from the root).
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn


def three_conv_cnn(classes: int = 10) -> nn.Module:
    """Three 3x3 convs (16, 32, 64 filters; BatchNorm after the second), 32 → 16 → 8 px, then a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )  # fmt: skip


def five_conv_bn_cnn(classes: int = 10) -> nn.Module:
    """Five 3x3 convs with BatchNorm (32, 32, 64, 64, 128 filters), 32 → 16 → 8 → 4 px, then a linear classifier."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 32), *block(32, 32), nn.MaxPool2d(2),
        *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
        *block(64, 128), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, classes),
    )  # fmt: skip


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convs with BatchNorm and a residual; conv1x1+BN downsample when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18Shaped(nn.Module):
    """torchvision's resnet18 layout in plain nn modules: conv7x7/2 + BN + maxpool, 4 stages of 2
    BasicBlocks (64, 128, 256, 512 filters), global average pool, linear head. 20 conv layers."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        cin = 64
        for i, w in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class EarlyHeavyResNet(nn.Module):
    """A residual net whose early layers hold most of the work: c1 3→64, c2 64→64 with a skip over
    it, c3 64→128 at stride 2 (each with BatchNorm and ReLU), global average pool, linear head.
    At 32 px, c2 and c3 are ~97 % of the FLOPs and every filter of c1 has both downstream."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.c2, self.bn2 = nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.c3, self.bn3 = nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(128)
        self.fc = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.c1(x)))
        x = F.relu(x + self.bn2(self.c2(x)))
        x = F.relu(self.bn3(self.c3(x)))
        return self.fc(x.mean(dim=(2, 3)))


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand ×4, each with BatchNorm;
    a conv1x1+BN projection on the skip when the shape changes."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet50Shaped(nn.Module):
    """torchvision's resnet50 layout in plain nn modules: conv7x7/2 + BN + maxpool, 4 stages of
    [3, 4, 6, 3] Bottlenecks (widths 64, 128, 256, 512, expansion 4), global average pool, linear
    head. 53 conv layers, 26,560 conv filters."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
            stride = 1 if i == 1 else 2
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(cin, width, stride if b == 0 else 1))
                cin = width * Bottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*stage))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(x.mean(dim=(2, 3), keepdim=True), 1))


def perturb_weights(
    parameters: Iterable[torch.Tensor], generator: Optional[torch.Generator] = None, scale: float = 0.02
) -> None:
    """Nudge each parameter by `scale` of its own spread, like an optimizer step would, so that no
    two logged epochs are alike. Draws from `generator`, else from torch's global one."""
    with torch.no_grad():
        for p in parameters:
            spread = p.std() if p.numel() > 1 else p.abs().mean()
            p.add_(torch.randn(p.shape, generator=generator) * scale * float(spread + 1e-8))
