"""Small models and probes the tests share: every conv kind the callback must handle."""
from __future__ import annotations

import torch
from torch import nn


def every_conv_kind() -> nn.Module:
    """Conv1d, Conv2d, Conv3d, grouped, depthwise and transposed convs in one model."""

    class AllKinds(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1d = nn.Conv1d(2, 4, 5)
            self.t1d = nn.ConvTranspose1d(4, 6, 3, groups=2)
            self.c2d = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.grouped = nn.Conv2d(8, 8, 3, groups=4, bias=False)
            self.depthwise = nn.Conv2d(8, 8, 3, groups=8)
            self.t2d = nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.c3d = nn.Conv3d(1, 3, 3)
            self.t3d = nn.ConvTranspose3d(3, 2, 2, stride=1, groups=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            seq = x[:, :2, :, 0]  # (n, 2, 8) as a 1-D signal
            a = self.t1d(torch.relu(self.c1d(seq))).mean(dim=(1, 2))
            b = self.t2d(torch.relu(self.depthwise(self.grouped(torch.relu(self.bn(self.c2d(x))))))).mean(dim=(1, 2, 3))
            vol = x[:, :1].unsqueeze(2).expand(n, 1, 4, 8, 8)
            c = self.t3d(self.c3d(vol)).mean(dim=(1, 2, 3, 4))
            return torch.stack([a, b, c], dim=1)

    torch.manual_seed(0)
    return AllKinds()


def probe_images(n: int = 4, size: int = 8, channels: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g)


def bn_cnn(classes: int = 3) -> nn.Sequential:
    """A CNN with BatchNorm and Dropout, both of which behave differently in train mode."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )


def two_conv_net(filters: tuple[int, int], classes: int, *, batchnorm: bool = True) -> nn.Sequential:
    """Two size-keeping 3x3 convs with `filters` filters, each followed by ReLU (BatchNorm before
    the first ReLU unless `batchnorm=False`), then global average pooling and a linear head.
    Conv layers are "0" and "3" ("0" and "2" without BatchNorm); input (n, 3, h, w)."""
    first, second = filters
    return nn.Sequential(
        nn.Conv2d(3, first, 3, padding=1),
        *([nn.BatchNorm2d(first)] if batchnorm else []),
        nn.ReLU(),
        nn.Conv2d(first, second, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(second, classes),
    )
