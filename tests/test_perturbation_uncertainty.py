"""Planted answers for how sure the perturbation numbers are: noise stability, attack change and
counterfactual change carry intervals over the probe's images that cover the value a large probe
gives and shrink with more images, and a counterfactual flag is a test over images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz.analysis.perturbation import counterfactual_sensitivity
from tb_convviz.analysis.perturbation.robustness import adversarial_change, noise_stability
from tb_convviz.analysis.perturbation.uncertainty import mean_interval, paired_t_pvalue, ratio_interval

SIZE = 16


class TwoChannelNet(nn.Module):
    """One 3×3 conv over two input channels, ReLU, mean pool, linear head: a classifier whose conv
    kernels are set by hand."""

    def __init__(self, kernels: torch.Tensor, classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(kernels.shape[1], kernels.shape[0], 3, padding=1)
        self.head = nn.Linear(kernels.shape[0], classes)
        with torch.no_grad():
            self.conv1.weight.copy_(kernels)
            self.conv1.bias.zero_()
            self.head.weight.copy_(torch.randn(classes, kernels.shape[0], generator=torch.Generator().manual_seed(0)))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv1(x)).mean(dim=(2, 3)))


def smooth(n: int, seed: int, channels: int = 1) -> torch.Tensor:
    """Natural-ish images: coarse uniform noise upsampled, values in [0, 1]."""
    coarse = torch.rand(n, channels, SIZE // 4, SIZE // 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def marker(patch: int = 6) -> torch.Tensor:
    """A ±1 checkerboard in the top-left corner of channel 0, zero elsewhere: the planted cue."""
    i = torch.arange(SIZE)
    board = ((i[:, None] + i[None, :]) % 2).float() * 2 - 1
    out = torch.zeros(1, 2, SIZE, SIZE)
    out[0, 0, :patch, :patch] = board[:patch, :patch]
    return out


CUE, UNRELATED = 0, 1


def cue_model() -> TwoChannelNet:
    """Filter 0 detects the checkerboard in channel 0; filter 1 sums channel 1 only; the other ten
    are smooth kernels on channel 0, blind to a checkerboard ((1, 2, 1) and (1, 0, −1) are
    orthogonal to (1, −1, 1))."""
    gen = torch.Generator().manual_seed(4)
    smooth_1d, slope = torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 0.0, -1.0])
    kernels = torch.zeros(12, 2, 3, 3)
    alt = torch.tensor([1.0, -1.0, 1.0])
    kernels[CUE, 0] = torch.outer(alt, alt) / 3
    kernels[UNRELATED, 1] = torch.ones(3, 3) / 9
    for f in range(2, 12):
        a, c = 0.5 + torch.rand(2, generator=gen)
        b, d = 0.5 * torch.randn(2, generator=gen)
        kernels[f, 0] = torch.outer(a * smooth_1d + b * slope, c * smooth_1d + d * slope) / 16
    return TwoChannelNet(kernels)


def test_a_filter_built_to_respond_to_the_edit_is_flagged_with_a_small_q_and_an_unrelated_one_is_not() -> None:
    model = cue_model()
    n = 12
    x = torch.cat([smooth(n, seed=5), torch.full((n, 1, SIZE, SIZE), 0.5)], dim=1) + marker()
    # The edit removes the cue and scales channel 1 by 1.2 on half the images and 0.8 on the other
    # half: filter 1's response moves by ±20% on every image, but not on average.
    factor = torch.tensor([1.2, 0.8] * (n // 2)).reshape(n, 1, 1)

    def edit(b: torch.Tensor) -> torch.Tensor:
        b = b - marker()
        b[:, 1] *= factor
        return b

    res = counterfactual_sensitivity(model, {"conv1": model.conv1}, x, {"no_cue": edit})["conv1"]
    change, ci, p, q, flag = (res[f"cf/no_cue{k}"] for k in ("", "/ci", "/p", "/q", "/flag"))
    assert ci.shape == (12, 2) and p.shape == q.shape == (12,)
    assert flag[CUE] and q[CUE] < 1e-3
    assert ci[CUE, 1] < -0.3  # sure it lost much of its response
    assert not flag[UNRELATED] and p[UNRELATED] > 0.9 and q[UNRELATED] > 0.9
    assert abs(change[UNRELATED]) < 1e-3
    # its interval covers its zero change and is as wide as ±20% per image makes it (t₁₁ · 0.2/√12 ≈ 0.13)
    assert ci[UNRELATED, 0] < -0.08 and ci[UNRELATED, 1] > 0.08
    assert np.flatnonzero(flag).tolist() == [CUE]
    assert (q >= p - 1e-7).all()  # BH never lowers a p-value


def test_a_large_change_seen_on_one_image_only_is_not_flagged() -> None:
    """The robust z alone flagged a filter moved by one image; the paired test asks whether the images agree."""
    model = cue_model()
    n = 12
    x = torch.cat([smooth(n, seed=6), torch.full((n, 1, SIZE, SIZE), 0.5)], dim=1)
    x[0] += marker()[0]  # only the first image carries the cue

    def edit(b: torch.Tensor) -> torch.Tensor:
        b = b.clone()
        b[0] -= marker()[0]
        return b

    res = counterfactual_sensitivity(model, {"conv1": model.conv1}, x, {"no_cue": edit})["conv1"]
    assert res["cf/no_cue/z"][CUE] > 3.5 and abs(res["cf/no_cue"][CUE]) > 0.05  # what once flagged it
    assert res["cf/no_cue/p"][CUE] > 0.3 and not res["cf/no_cue/flag"][CUE]


def probe(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n two-channel images and labels, standardised per channel over the probe. The noise is σ ×
    the probe's std, so a probe of its own std would add a probe-wide factor that no interval over
    images sees; standardised, every probe has the same noise scale and only the images differ."""
    x = torch.cat([smooth(n, seed), smooth(n, seed + 1000)], dim=1)
    flat = x.transpose(0, 1).reshape(2, -1)
    x = (x - flat.mean(1).reshape(1, 2, 1, 1)) / flat.std(1).reshape(1, 2, 1, 1)
    return x, torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))


def dim_channel_0(b: torch.Tensor) -> torch.Tensor:
    b = b.clone()
    b[:, 0] *= 0.7
    return b


def values_and_intervals(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each number with an interval, by name: (values (F,), intervals (F, 2)); `seed` draws the noise."""
    layers = {"conv1": model.conv1}
    noise = noise_stability(model, layers, x, sigmas=(0.5, 1.0), seed=seed)["conv1"]
    attack = adversarial_change(model, layers, x, y, epsilon=0.1, pgd_steps=2)["conv1"]
    cf = counterfactual_sensitivity(model, layers, x, {"dim": dim_channel_0})["conv1"]
    return {
        "stability": (noise["stability"].mean(1), noise["stability_ci"]),
        "fgsm": (attack["fgsm"], attack["fgsm_ci"]),
        "pgd": (attack["pgd"], attack["pgd_ci"]),
        "cf/dim": (cf["cf/dim"], cf["cf/dim/ci"]),
    }


@pytest.fixture(scope="module")
def random_model() -> TwoChannelNet:
    return TwoChannelNet(torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(11)))


def test_intervals_hold_their_value_and_shrink_with_more_images(random_model: TwoChannelNet) -> None:
    small = values_and_intervals(random_model, *probe(16, seed=1))
    large = values_and_intervals(random_model, *probe(256, seed=2))
    for name in small:
        for found in (small[name], large[name]):
            values, ci = found
            assert ci.shape == (6, 2) and np.isfinite(ci).all(), name
            assert (ci[:, 0] <= values + 1e-6).all() and (values <= ci[:, 1] + 1e-6).all(), name
        width_small = small[name][1][:, 1] - small[name][1][:, 0]
        width_large = large[name][1][:, 1] - large[name][1][:, 0]
        # 16× the images: about a quarter of the width (√16 and t₁₅ → t₂₅₅ give ×4.3); each filter's
        # sample spread varies, so every filter narrower and the layer's median at most half
        assert (width_large < width_small).all(), (name, width_small, width_large)
        assert np.median(width_large / width_small) < 0.5, (name, width_small, width_large)


def test_intervals_cover_the_value_of_a_large_probe_about_95_percent_of_the_time(random_model: TwoChannelNet) -> None:
    truth = {name: values for name, (values, _) in values_and_intervals(random_model, *probe(3000, seed=7)).items()}
    covered: dict[str, list] = {name: [] for name in truth}
    estimates: dict[str, list] = {name: [] for name in truth}
    widths: dict[str, list] = {name: [] for name in truth}
    for trial in range(40):
        # new images and new noise each trial (one seed would give every trial the same noise)
        for name, (values, ci) in values_and_intervals(random_model, *probe(24, seed=100 + trial), seed=trial).items():
            covered[name].extend((ci[:, 0] <= truth[name]) & (truth[name] <= ci[:, 1]))
            estimates[name].append(values)
            widths[name].append(ci[:, 1] - ci[:, 0])
    for name, hits in covered.items():
        rate = float(np.mean(hits))  # 240 intervals each
        assert rate >= 0.85, (name, rate)
        # and not by being wide: a 95% interval spans about 4 standard deviations of the estimate.
        # Standardising each probe takes out some of the probe-to-probe variation an interval over
        # images allows for, so here they run up to 2× that; 3× would be an interval gone wrong.
        spread = np.std(estimates[name], axis=0)
        assert (np.mean(widths[name], axis=0) < 12 * spread).all(), (name, np.mean(widths[name], axis=0), spread)


def test_interval_and_test_functions_on_known_samples() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(2.0, 1.0, size=(10, 3))
    ci = mean_interval(a)
    from scipy import stats

    for f in range(3):
        want = stats.t.interval(0.95, 9, loc=a[:, f].mean(), scale=stats.sem(a[:, f]))
        np.testing.assert_allclose(ci[f], want, rtol=1e-5)
        np.testing.assert_allclose(paired_t_pvalue(a)[f], stats.ttest_1samp(a[:, f], 0).pvalue, rtol=1e-6)
    # the ratio of sums of proportional samples is known exactly: no width
    den = rng.uniform(1, 2, size=(10, 2))
    np.testing.assert_allclose(ratio_interval(3 * den, den), 3.0, rtol=1e-6)
    assert np.isnan(mean_interval(a[:1])).all() and np.isnan(paired_t_pvalue(a[:1])).all()
    assert paired_t_pvalue(np.zeros((5, 1)))[0] == 1.0 and paired_t_pvalue(np.ones((5, 1)))[0] == 0.0
