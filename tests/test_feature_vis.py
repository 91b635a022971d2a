"""Feature visualization with planted answers: hand-set filters whose preferred input is known."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from tb_convviz.analysis.feature_vis import feature_visualization

SIZE = 32


def gabor(theta_deg: float, size: int = 9, wavelength: float = 4.0, sigma: float = 2.5) -> torch.Tensor:
    """A cosine Gabor whose wave vector points at theta, counter-clockwise from the column axis
    (array rows grow downwards, so the angle is measured with y = −row)."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    x, y = cols, -rows
    t = math.radians(theta_deg)
    along = x * math.cos(t) + y * math.sin(t)
    return (torch.exp(-(x * x + y * y) / (2 * sigma**2)) * torch.cos(2 * math.pi * along / wavelength)).float()


def dominant_orientation(image: np.ndarray) -> float:
    """Angle (degrees, mod 180) of the strongest non-DC wave vector of a (H, W) image, in the
    convention of `gabor`."""
    spectrum = np.abs(np.fft.fft2(image - image.mean()))
    spectrum[0, 0] = 0
    row, col = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    fy = np.fft.fftfreq(image.shape[0])[row]
    fx = np.fft.fftfreq(image.shape[1])[col]
    return math.degrees(math.atan2(-fy, fx)) % 180


def angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


def gabor_net(theta: float) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 2, 9, padding=4), nn.ReLU())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
        net[0].weight[0, 0] = gabor(theta)
        net[0].weight[1, 0] = gabor(theta + 90)
    return net.eval()


def probe_1ch(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_gabor_filter_image_has_its_orientation():
    for theta in (30.0, 120.0):
        net = gabor_net(theta)
        out = feature_visualization(net, {"0": net[0]}, probe_1ch(), {"0": [0, 1]}, {"0": net[1]}, steps=96)
        images = out["0"]["images"]
        assert images.shape == (2, 1, SIZE, SIZE)
        found = dominant_orientation(images[0, 0])
        assert angle_gap(found, theta) <= 10, (theta, found)
        assert angle_gap(dominant_orientation(images[1, 0]), theta + 90) <= 10
        # The optimisation beats every probe image, and reports what it reached.
        assert np.all(out["0"]["objective"] > out["0"]["probe_best"])
        direct = net(torch.from_numpy(images)).mean((2, 3))
        assert np.allclose(direct.diagonal().detach().numpy(), out["0"]["objective"], rtol=1e-4)


class CornerColourNet(nn.Module):
    """conv1: identity on the colours (+ReLU); conv2: one filter over the whole 32×32 image whose
    only nonzero weights, in the top-left 10×10 patch, read +R −G −B: it fires on red there."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 2, SIZE)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.eye(3)[:, :, None, None])
            self.conv1.bias.zero_()
            self.conv2.weight.zero_()
            self.conv2.bias.zero_()
            self.conv2.weight[0, :, :10, :10] = torch.tensor([1.0, -1.0, -1.0])[:, None, None] / 100
            self.conv2.weight[1, :, -10:, -10:] = torch.tensor([-1.0, 1.0, -1.0])[:, None, None] / 100

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


def test_deeper_filter_wired_to_a_colour_in_a_corner_paints_that_corner():
    net = CornerColourNet().eval()
    probe = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    out = feature_visualization(net, {"conv2": net.conv2}, probe, {"conv2": [0, 1]}, steps=96)
    images = out["conv2"]["images"]  # in the probe's range, here [0, 1]
    red = images[0, :, 2:8, 2:8].mean((1, 2))
    assert red[0] > 0.75 and red[1] < 0.25 and red[2] < 0.25, red
    green = images[1, :, -8:-2, -8:-2].mean((1, 2))
    assert green[1] > 0.75 and green[0] < 0.25 and green[2] < 0.25, green


def test_same_weights_and_seed_give_the_same_image_and_another_seed_another():
    net = gabor_net(30.0)
    args = (net, {"0": net[0]}, probe_1ch(), {"0": [0]}, {"0": net[1]})
    a = feature_visualization(*args, steps=20, seed=3)["0"]["images"]
    b = feature_visualization(*args, steps=20, seed=3)["0"]["images"]
    c = feature_visualization(*args, steps=20, seed=4)["0"]["images"]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_a_filter_image_does_not_depend_on_its_batch_companions():
    net = gabor_net(30.0)
    alone = feature_visualization(net, {"0": net[0]}, probe_1ch(), {"0": [1]}, {"0": net[1]}, steps=20)["0"]["images"][0]
    both = feature_visualization(net, {"0": net[0]}, probe_1ch(), {"0": [0, 1]}, {"0": net[1]}, steps=20)["0"]["images"][1]
    assert np.allclose(alone, both, atol=1e-5)


def test_conv1d_and_conv3d_give_a_sequence_and_a_clip():
    seq = nn.Sequential(nn.Conv1d(2, 4, 5, padding=2), nn.ReLU())
    out = feature_visualization(seq, {"0": seq[0]}, torch.randn(4, 2, 40), {"0": [0, 3]}, steps=8)
    assert out["0"]["images"].shape == (2, 2, 40)
    clip = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.GELU())
    out = feature_visualization(clip, {"0": clip[0]}, torch.rand(2, 3, 4, 12, 12), {"0": [1]}, {"0": clip[1]}, steps=8)
    assert out["0"]["images"].shape == (1, 3, 4, 12, 12)
    assert np.all(out["0"]["objective"] >= 0)
