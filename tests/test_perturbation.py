"""Planted-truth tests for tb_convviz.analysis.perturbation: filters built by hand, known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models import bn_cnn, probe_images
from torch import nn

from tb_convviz import ConvViz, load
from tb_convviz.analysis.perturbation import counterfactual_sensitivity, perturbation_responses
from tb_convviz.analysis.perturbation.counterfactual import robust_z
from tb_convviz.analysis.perturbation.engine import CombinedPass
from tb_convviz.analysis.perturbation.orientation import orientation_tuning, rotation_response
from tb_convviz.analysis.perturbation.robustness import adversarial_change, noise_stability
from tb_convviz.analysis.perturbation.sequence import sequence_symmetry
from tb_convviz.analysis.perturbation.shape_texture import shape_texture_sensitivity
from tb_convviz.analysis.perturbation.stimuli import gaussian_blur, grating_batch, shuffle_patches

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
        rotate_probe=True, shape_texture=True,
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
        "stability_ci": (filters, 2),
        "adv_epsilon": (),
        "fgsm": (filters,),
        "pgd": (filters,),
        "fgsm_ci": (filters, 2),
        "pgd_ci": (filters, 2),
        "cf/dark": (filters,),
        "cf/dark/ci": (filters, 2),
        "cf/dark/p": (filters,),
        "cf/dark/q": (filters,),
        "cf/dark/cosine": (filters,),
        "cf/dark/z": (filters,),
        "cf/dark/flag": (filters,),
        "st/shape_sensitivity": (filters,),
        "st/texture_sensitivity": (filters,),
        "st/index": (filters,),
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


# ---------------------------------------------------------------- the combined pass


def inplace_net() -> nn.Sequential:
    """Two convs, each followed by ReLU(inplace=True) (which rewrites the conv's output), stride 2 in the second."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    ).eval()  # fmt: skip


def full_maps(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's output on x, (N, F, positions), from a plain forward with its own hook: the naive reference."""
    kept = []
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.append(out.detach().flatten(2).clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return kept[0]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


COUNTERFACTUALS = {"dark": lambda b: b * 0.5, "mirror": lambda b: torch.flip(b, dims=[-1])}


def assert_same_arrays(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        assert set(got[name]) == set(want[name]), name
        for key, value in want[name].items():
            if value.dtype == bool:
                np.testing.assert_array_equal(got[name][key], value, err_msg=f"{name} {key}")
            elif key.endswith("/z"):  # a robust z divides by a MAD that can be tiny: float noise grows
                np.testing.assert_allclose(got[name][key], value, rtol=1e-3, atol=1e-3, err_msg=f"{name} {key}")
            else:
                np.testing.assert_allclose(got[name][key], value, rtol=1e-4, atol=1e-6, err_msg=f"{name} {key}")


def test_default_set_in_shared_passes_equals_each_analysis_alone() -> None:
    model = inplace_net()
    layers = {"0": model[0], "2": model[2]}
    x = torch.randn(5, 3, 20, 20, generator=torch.Generator().manual_seed(11))
    y = torch.tensor([0, 1, 2, 0, 1])
    alone = [
        orientation_tuning(model, layers, x, phases=2),
        rotation_response(model, layers, x),
        noise_stability(model, layers, x, seed=4),
        adversarial_change(model, layers, x, y),
        counterfactual_sensitivity(model, layers, x, COUNTERFACTUALS),
        shape_texture_sensitivity(model, layers, x, patch_size=4, seed=4),
    ]
    want = {name: {k: v for part in alone for k, v in part[name].items()} for name in layers}
    image_bytes = 4 * (6 * 20 * 20 + 5 * 10 * 10)  # both layers' float outputs on one image
    for budget in (1 << 30, 7 * image_bytes):  # one pass; passes of 7 images that cut across blocks
        got = perturbation_responses(
            model, layers, x, y, counterfactuals=COUNTERFACTUALS, rotate_probe=True, shape_texture=True, patch_size=4,
            seed=4, max_batch_bytes=budget,
        )  # fmt: skip
        assert_same_arrays(got, want)


def test_sequence_default_set_equals_sequence_symmetry_alone() -> None:
    torch.manual_seed(1)
    conv_a, conv_b = nn.Conv1d(2, 4, 5, padding=2), nn.Conv1d(4, 3, 3, stride=2)
    model = nn.Sequential(conv_a, nn.ReLU(inplace=True), conv_b, nn.AdaptiveAvgPool1d(1), nn.Flatten()).eval()
    layers = {"0": conv_a, "2": conv_b}
    x = torch.randn(4, 2, 32, generator=torch.Generator().manual_seed(3))
    with pytest.warns(UserWarning, match="shape_texture needs 2-D images"):
        got = perturbation_responses(model, layers, x, None, shape_texture=True, max_batch_bytes=5 * 4 * (4 * 32 + 3 * 15))
    assert not any(key.startswith("st/") for key in got["0"])
    alone = sequence_symmetry(model, layers, x)
    for name in layers:
        for key, value in alone[name].items():
            np.testing.assert_allclose(got[name][key], value, rtol=1e-4, atol=1e-6)


def test_combined_results_match_a_naive_forward_per_variant() -> None:
    """Each statistic recomputed from full maps of a separate plain forward per perturbed copy."""
    model = inplace_net()
    conv = model[0]
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    y = torch.tensor([2, 0, 1, 1])
    sigmas = (0.25, 1.0)
    res = perturbation_responses(
        model, {"0": conv}, x, y, counterfactuals=COUNTERFACTUALS, noise_sigmas=sigmas, seed=9, max_batch_bytes=3 * 4 * 6 * 256
    )["0"]
    clean = full_maps(model, conv, x)
    mean = x.mean(dim=(0, 2, 3)).reshape(1, 3, 1, 1)
    std = x.transpose(0, 1).reshape(3, -1).std(dim=1).reshape(1, 3, 1, 1)

    noise = torch.randn((len(sigmas),) + tuple(x.shape), generator=torch.Generator().manual_seed(9))
    for s, sigma in enumerate(sigmas):
        noisy = full_maps(model, conv, x + sigma * std * noise[s])
        np.testing.assert_allclose(res["stability"][:, s], cosine(noisy, clean).mean(0).numpy(), rtol=1e-4)

    for name, edit in COUNTERFACTUALS.items():
        edited = full_maps(model, conv, edit(x))
        before = clean.abs().mean(dim=(0, 2))
        change = (edited.abs().mean(dim=(0, 2)) - before) / before
        np.testing.assert_allclose(res[f"cf/{name}"], change.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(res[f"cf/{name}/cosine"], cosine(edited, clean).mean(0).numpy(), rtol=1e-4)

    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    moved = full_maps(model, conv, x + 0.1 * std * grad.sign())
    fgsm = (moved - clean).transpose(0, 1).flatten(1).norm(dim=1) / clean.transpose(0, 1).flatten(1).norm(dim=1)
    np.testing.assert_allclose(res["fgsm"], fgsm.numpy(), rtol=1e-4)

    # one frequency, so the tuning is the phase-averaged grating-driven energy itself
    tuning = orientation_tuning(model, {"0": conv}, x, angles=6, frequencies=(1 / 8,), phases=2)["0"]["tuning"]
    angles = torch.arange(6) * 30.0
    gratings = grating_batch((3, 16, 16), angles, (1 / 8,), 2, mean.flatten(), std.flatten())
    blank = full_maps(model, conv, mean.expand(1, 3, 16, 16))
    energy = ((full_maps(model, conv, gratings) - blank) ** 2).mean(-1).reshape(6, 2, -1).mean(1)  # (A, F)
    np.testing.assert_allclose(tuning, energy.T.numpy(), rtol=1e-4, atol=1e-7)


def test_default_set_makes_the_gradient_passes_and_one_shared_pass_within_the_budget() -> None:
    model = inplace_net()
    layers = {"0": model[0], "2": model[2]}
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(13))
    calls: list[tuple[int, bool]] = []
    handle = model.register_forward_pre_hook(lambda _m, inputs: calls.append((inputs[0].shape[0], torch.is_grad_enabled())))
    try:
        perturbation_responses(model, layers, x, None, counterfactuals=COUNTERFACTUALS, pgd_steps=2)
        grad_passes = [c for c in calls if c[1]]
        shared = [n for n, grad in calls if not grad]
        # FGSM (which also gives the predictions attacked when y is None) and 2 PGD steps
        assert grad_passes == [(3, True)] * 3
        # blank 1, clean 3, gratings 3·12·2, noise 4·3, fgsm 3, pgd 3, two edits 3 each
        assert shared == [1, 1 + 3 + 72 + 12 + 3 + 3 + 6 - 1]
        calls.clear()
        image_bytes = 4 * (6 * 144 + 5 * 36)
        perturbation_responses(model, layers, x, None, max_batch_bytes=10 * image_bytes + 5)
        shared = [n for n, grad in calls if not grad]
        assert shared[0] == 1 and max(shared) == 10 and sum(shared) == 1 + 3 + 72 + 12 + 3 + 3
        assert len(shared) == 1 + math.ceil((sum(shared) - 1) / 10)
    finally:
        handle.remove()


def test_combined_pass_keeps_references_whole_and_reduces_the_rest_in_the_hook() -> None:
    model = inplace_net()
    layers = {"0": model[0]}
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(14))
    combined = CombinedPass(model, layers, max_batch_bytes=4 * 4 * 6 * 64)  # 4 images a pass after the first
    seen: list[tuple[int, int]] = []

    def scaled_copy_error(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
        seen.append((first, len(out)))
        clean = combined.maps("clean")[name][torch.arange(first, first + len(out)) % 4]
        return (out - clean).abs().amax(-1)

    combined.add("copies", torch.cat([x, x]), scaled_copy_error)  # added first, still runs after the reference
    combined.reference("clean", x)
    combined.reference("clean", x * 2)  # the same key is the same block
    combined.run()
    assert combined.passes == [1, 4, 4, 3]  # the second carries the rest of the reference and a first copy
    assert seen == [(0, 1), (1, 4), (5, 3)]
    torch.testing.assert_close(combined.maps("clean")["0"], full_maps(model, model[0], x))
    assert combined.reduced("copies")["0"].shape == (8, 6)
    assert float(combined.reduced("copies")["0"].max()) < 1e-5
    with pytest.raises(ValueError, match="already added"):
        combined.add("copies", x, scaled_copy_error)
    with pytest.raises(ValueError, match="max_batch_bytes"):
        CombinedPass(model, layers, max_batch_bytes=0)


# ---------------------------------------------------------------- shape vs texture


def disc_and_checker_images(n: int, size: int, seed: int) -> torch.Tensor:
    """A big bright disc (the shape) at a random place, over a ±0.25 checkerboard everywhere (the texture)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    images = []
    for _ in range(n):
        cy, cx = (size / 2 + (torch.rand(2, generator=g) - 0.5) * size / 4).tolist()
        radius = size * (0.25 + 0.1 * float(torch.rand(1, generator=g)))
        disc = (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2).float()
        checker = (yy + xx + int(torch.randint(2, (1,), generator=g))) % 2 - 0.5
        images.append(disc + 0.5 * checker)
    return torch.stack(images).unsqueeze(1)


def test_shape_texture_index_puts_a_texture_and_a_shape_detector_at_opposite_ends() -> None:
    second_difference = torch.tensor([1.0, -2.0, 1.0])
    texture = torch.zeros(15, 15)
    texture[6:9, 6:9] = torch.outer(second_difference, second_difference) / 16  # a checkerboard detector, blind to DC
    shape = torch.ones(15, 15) / 225  # wide averaging: sees the disc, averages the checkerboard away
    conv = nn.Conv2d(1, 3, 15, padding=7)
    with torch.no_grad():
        conv.weight.copy_(torch.stack([texture, shape, torch.zeros(15, 15)]).unsqueeze(1))
        conv.bias.copy_(torch.tensor([0.3, -0.2, 0.5]))  # bias does not count: responses are blank-subtracted
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    rng = torch.get_rng_state()
    res = shape_texture_sensitivity(model, {"c": conv}, disc_and_checker_images(6, 48, seed=0))["c"]
    assert torch.equal(rng, torch.get_rng_state())
    assert {k: v.shape for k, v in res.items()} == {k: (3,) for k in ("st/shape_sensitivity", "st/texture_sensitivity", "st/index")}
    assert res["st/texture_sensitivity"][0] > 0.9 and res["st/shape_sensitivity"][0] < 0.05
    assert res["st/shape_sensitivity"][1] > 0.2 and res["st/texture_sensitivity"][1] < 0.05
    assert res["st/index"][0] < -0.9 and res["st/index"][1] > 0.6
    # a filter neither transform moves (here: one that sees nothing at all) is not called either
    np.testing.assert_array_equal([res[k][2] for k in res], [0.0, 0.0, 0.0])
    assert ((res["st/index"] >= -1) & (res["st/index"] <= 1)).all()


def test_shuffle_patches_permutes_whole_patches_per_image_and_leaves_the_rest() -> None:
    x = torch.randn(3, 2, 10, 13, generator=torch.Generator().manual_seed(15))
    shuffled = shuffle_patches(x, 4, torch.Generator().manual_seed(1))  # a 2 x 3 grid; 2 rows, 1 column left over
    np.testing.assert_array_equal(shuffled[:, :, 8:], x[:, :, 8:])
    np.testing.assert_array_equal(shuffled[:, :, :, 12:], x[:, :, :, 12:])

    def patches(image: torch.Tensor) -> list[torch.Tensor]:
        return [image[:, r : r + 4, c : c + 4] for r in (0, 4) for c in (0, 4, 8)]

    orders = []
    for before, after in zip(x, shuffled):
        order = [next(i for i, p in enumerate(patches(before)) if torch.equal(p, q)) for q in patches(after)]
        assert sorted(order) == list(range(6))
        orders.append(order)
    assert orders[0] != list(range(6)) and len({tuple(o) for o in orders}) == 3  # each image its own shuffle
    torch.testing.assert_close(shuffle_patches(x, 4, torch.Generator().manual_seed(1)), shuffled)
    for bad in (0, 7):
        with pytest.raises(ValueError, match="patch_size"):
            shuffle_patches(x, bad, torch.Generator())


def test_gaussian_blur_keeps_flat_images_and_removes_fine_texture() -> None:
    flat = torch.full((1, 2, 12, 12), 0.7)
    torch.testing.assert_close(gaussian_blur(flat, 1.5), flat)
    i = torch.arange(32)
    checker = ((i[:, None] + i[None, :]) % 2).float().reshape(1, 1, 32, 32)
    blurred = gaussian_blur(checker, 1.0)
    assert blurred.shape == checker.shape
    assert float(blurred.std()) < 0.01 * float(checker.std())
    assert float(blurred.mean()) == pytest.approx(float(checker.mean()), abs=1e-3)
    with pytest.raises(ValueError, match="blur_sigma"):
        gaussian_blur(checker, 0.0)


def test_callback_logs_shape_texture_on_request(tmp_path) -> None:
    viz = ConvViz(tmp_path, probe=probe_images(n=4, size=16), perturbations={"shape_texture": True, "blur_sigma": 1.0})
    viz.log(bn_cnn(), 0)
    viz.close()
    logs = load(tmp_path)
    arrays = logs.perturbation(logs.runs()[0], "4", 0)
    assert {k: arrays[k].shape for k in arrays if k.startswith("st/")} == {
        "st/shape_sensitivity": (8,),
        "st/texture_sensitivity": (8,),
        "st/index": (8,),
    }
    assert np.all(np.abs(arrays["st/index"]) <= 1.0)
    tuning = logs.tuning(logs.runs()[0], "4", 0, "shape_texture")
    assert sorted(tuning) == ["index", "shape_sensitivity", "texture_sensitivity"]
    np.testing.assert_array_equal(tuning["index"], arrays["st/index"])


def test_ranks_sharing_the_perturbed_rows_give_the_single_process_result() -> None:
    """Three "ranks" each pass their share of the rows; the gathering one assembles them."""
    model = bn_cnn().eval()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    x = probe_images(n=4, size=16)
    options = dict(counterfactuals={"dim": lambda b: 0.5 * b}, shape_texture=True, max_batch_bytes=20_000)
    alone = perturbation_responses(model, layers, x, **options)
    shares: list = []

    def gather_into(rank: int):
        def gather(obj):
            shares.append(obj)
            return list(shares) if rank == 2 else None  # the last rank to arrive assembles, as rank 0 would

        return gather

    for rank in range(3):
        result = perturbation_responses(model, layers, x, share=(rank, 3, gather_into(rank)), **options)
        assert (result is None) == (rank < 2)
    for name in layers:
        for key, value in alone[name].items():
            np.testing.assert_allclose(result[name][key], value, rtol=1e-5, atol=1e-5, err_msg=f"{name}/{key}")
