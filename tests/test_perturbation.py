"""Planted-truth tests for tb_convviz.analysis.perturbation: filters built by hand, known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz.analysis.perturbation import (
    adversarial_change,
    counterfactual_sensitivity,
    noise_stability,
    orientation_tuning,
    perturbation_responses,
    robust_z,
    sequence_symmetry,
)

KERNEL = 9
GABOR_ANGLES = (10.0, 55.0, 100.0, 145.0)  # off the 15° grid on purpose
EDGE_ANGLES = (30.0, 120.0)
DC = len(GABOR_ANGLES) + len(EDGE_ANGLES)  # index of the constant kernel


def _coords(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel coordinates with x to the right and y up (the module's angle convention)."""
    r = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    yy, xx = torch.meshgrid(-r, r, indexing="ij")
    return xx, yy


def gabor(theta_deg: float, freq: float = 1 / 6, sigma: float = 2.5) -> torch.Tensor:
    """Even Gabor whose stripes run along theta (counter-clockwise from horizontal, y up)."""
    xx, yy = _coords(KERNEL)
    t = math.radians(theta_deg)
    across = -xx * math.sin(t) + yy * math.cos(t)
    return torch.exp(-(xx**2 + yy**2) / (2 * sigma**2)) * torch.cos(2 * math.pi * freq * across)


def edge(theta_deg: float, sigma: float = 2.0) -> torch.Tensor:
    """Derivative of a Gaussian across an edge that runs along theta."""
    xx, yy = _coords(KERNEL)
    t = math.radians(theta_deg)
    across = -xx * math.sin(t) + yy * math.cos(t)
    return across * torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))


def smooth_images(n: int, size: int, seed: int, channels: int = 1) -> torch.Tensor:
    """Natural-ish images: coarse noise upsampled, mean 0.5."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


class Planted(nn.Module):
    """conv1 holds hand-made kernels; the head is just there to make a classifier."""

    def __init__(self, kernels: torch.Tensor, classes: int = 3):
        super().__init__()
        f, k = kernels.shape[0], kernels.shape[-1]
        self.conv1 = nn.Conv2d(1, f, k, padding=k // 2)
        self.head = nn.Linear(f, classes)
        with torch.no_grad():
            self.conv1.weight.copy_(kernels.reshape(f, 1, k, k))
            self.conv1.bias.zero_()
            self.head.weight.copy_(torch.randn(classes, f, generator=torch.Generator().manual_seed(0)))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv1(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def oriented_model() -> Planted:
    kernels = [gabor(a) for a in GABOR_ANGLES] + [edge(a) for a in EDGE_ANGLES]
    kernels.append(torch.ones(KERNEL, KERNEL) / KERNEL**2)
    return Planted(torch.stack(kernels))


def _angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


def test_tuning_peaks_at_the_planted_orientation(oriented_model: Planted) -> None:
    x = smooth_images(4, 32, seed=1)
    res = orientation_tuning(oriented_model, {"conv1": oriented_model.conv1}, x)["conv1"]
    angles = res["rotation_angles"]
    assert angles.shape == (12,) and res["tuning"].shape == (DC + 1, 12)
    for f, truth in enumerate(GABOR_ANGLES + EDGE_ANGLES):
        peak = float(angles[res["tuning"][f].argmax()])
        assert _angle_gap(peak, truth) <= 15, (f, truth, peak)
        assert _angle_gap(float(res["preferred_orientation"][f]), truth) <= 15
        assert res["osi"][f] > 0.3, (f, res["osi"][f])


def test_dc_kernel_is_untuned_and_stable(oriented_model: Planted) -> None:
    layers = {"conv1": oriented_model.conv1}
    x = smooth_images(4, 32, seed=2)
    tuning = orientation_tuning(oriented_model, layers, x)["conv1"]
    assert tuning["osi"][DC] < 0.05
    stab = noise_stability(oriented_model, layers, x)["conv1"]
    assert stab["stability"].shape == (DC + 1, 4)
    assert (stab["stability"][DC] > 0.97).all()
    # the oriented high-pass kernels lose their map to strong noise; the DC kernel does not
    assert stab["stability"][DC, -1] > stab["stability"][:DC, -1].max()


def test_noise_is_deterministic_and_leaves_global_rng() -> None:
    model = Planted(torch.stack([gabor(0.0), gabor(90.0)]))
    x = smooth_images(3, 16, seed=3)
    before = torch.get_rng_state()
    a = noise_stability(model, {"conv1": model.conv1}, x, seed=7)["conv1"]["stability"]
    b = noise_stability(model, {"conv1": model.conv1}, x, seed=7)["conv1"]["stability"]
    assert torch.equal(before, torch.get_rng_state())
    np.testing.assert_array_equal(a, b)
    assert (np.diff(a, axis=1) <= 1e-6).all()  # more noise never makes a map more similar


def checker_marker(size: int, patch: int) -> torch.Tensor:
    """A ±1 checkerboard patch in the top-left corner, zero elsewhere: the planted cue."""
    i = torch.arange(size)
    board = ((i[:, None] + i[None, :]) % 2).float() * 2 - 1
    mask = torch.zeros(size, size)
    mask[:patch, :patch] = 1
    return (board * mask).reshape(1, 1, size, size)


def test_counterfactual_flags_the_cue_detector() -> None:
    gen = torch.Generator().manual_seed(4)
    # u ⊗ v with u, v in span{(1,2,1), (1,0,−1)} = (1,−1,1)⊥: smooth kernels blind to a checkerboard
    smooth, slope = torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 0.0, -1.0])
    kernels = []
    for _ in range(12):
        a, c = 0.5 + torch.rand(2, generator=gen)
        b, d = 0.5 * torch.randn(2, generator=gen)
        kernels.append(torch.outer(a * smooth + b * slope, c * smooth + d * slope) / 16)
    cue = 5
    alt = torch.tensor([1.0, -1.0, 1.0])
    kernels[cue] = torch.outer(alt, alt) / 3  # the checkerboard detector
    model = Planted(torch.stack(kernels))
    marker = checker_marker(24, 6)
    x = smooth_images(6, 24, seed=5) + marker
    res = counterfactual_sensitivity(model, {"conv1": model.conv1}, x, {"no_marker": lambda b: b - marker})["conv1"]
    assert res["cf/no_marker"].shape == (12,) and res["cf/no_marker/cosine"].shape == (12,)
    assert res["cf/no_marker"][cue] < -0.3  # much of its response was the marker
    assert res["cf/no_marker/cosine"][cue] < res["cf/no_marker/cosine"][np.arange(12) != cue].min()
    assert res["cf/no_marker/flag"].dtype == bool
    assert np.flatnonzero(res["cf/no_marker/flag"]).tolist() == [cue]
    # the marker's border moves other kernels a little; a large z on a tiny change is not flagged
    others = np.arange(12) != cue
    assert np.abs(res["cf/no_marker"][others]).max() < 0.01


def test_robust_z_handles_ties() -> None:
    z = robust_z(torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0]))
    assert z[-1] > 3.5 and (z[:-1] == 0).all()
    assert (robust_z(torch.ones(4)) == 0).all()


def test_adversarial_moves_activations_and_pgd_is_stronger_on_its_objective() -> None:
    model = Planted(torch.stack([gabor(a) for a in (0.0, 45.0, 90.0)]))
    x = smooth_images(4, 16, seed=6)
    y = torch.tensor([0, 1, 2, 0])
    res = adversarial_change(model, {"conv1": model.conv1}, x, y, epsilon=0.2)["conv1"]
    assert res["fgsm"].shape == (3,) and res["pgd"].shape == (3,)
    assert (res["fgsm"] > 0).all() and (res["pgd"] > 0).all()
    assert np.isfinite(res["fgsm"]).all() and float(res["adv_epsilon"]) == pytest.approx(0.2)


def test_sequence_shift_and_reversal_for_1d() -> None:
    conv = nn.Conv1d(1, 2, 5, padding=2, padding_mode="circular", bias=False)
    with torch.no_grad():
        conv.weight[0, 0] = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0])  # palindromic
        conv.weight[1, 0] = torch.tensor([-1.0, -2.0, 0.0, 2.0, 1.0])  # antisymmetric
    model = nn.Sequential(conv).eval()
    x = torch.randn(3, 1, 64, generator=torch.Generator().manual_seed(8))
    res = sequence_symmetry(model, {"0": conv}, x)["0"]
    assert res["shift"].shape == (2, 3) and res["shift_fractions"].shape == (3,)
    np.testing.assert_allclose(res["shift"], 1.0, atol=1e-5)  # circular padding: exactly equivariant
    np.testing.assert_allclose(res["reversal"], [1.0, -1.0], atol=1e-5)


def test_default_set_keys_shapes_and_untouched_state(oriented_model: Planted) -> None:
    model = oriented_model
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    grads = [p.grad for p in model.parameters()]
    weights = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    x = smooth_images(4, 24, seed=9)
    res = perturbation_responses(
        model, {"conv1": model.conv1}, x, torch.tensor([0, 1, 2, 1]), counterfactuals={"dark": lambda b: b * 0.5},
        rotate_probe=True,
    )["conv1"]
    filters = DC + 1
    expect = {
        "rotation_angles": (12,),
        "tuning": (filters, 12),
        "tuning_frequency": (filters,),
        "osi": (filters,),
        "preferred_orientation": (filters,),
        "rotation_response": (filters, 12),
        "noise_sigmas": (4,),
        "stability": (filters, 4),
        "adv_epsilon": (),
        "fgsm": (filters,),
        "pgd": (filters,),
        "cf/dark": (filters,),
        "cf/dark/cosine": (filters,),
        "cf/dark/z": (filters,),
        "cf/dark/flag": (filters,),
    }
    assert {k: v.shape for k, v in res.items()} == expect
    assert all(isinstance(v, np.ndarray) for v in res.values())
    np.testing.assert_allclose(res["rotation_response"][:, 0], 1.0, rtol=1e-6)
    assert torch.equal(rng, torch.get_rng_state())
    for p, g, w in zip(model.parameters(), grads, weights):
        assert p.grad is g and (g == 3.0).all()
        assert torch.equal(p.detach(), w)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    for p in model.parameters():
        p.grad = None
