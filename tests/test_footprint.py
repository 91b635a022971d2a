"""Planted-truth tests for tb_convviz.analysis.footprint: energy rings, dead and duplicate filters, hints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tb_convviz.analysis import footprint
from tb_convviz.analysis.footprint import kernel_footprint, offset_rings


def random_kernels(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_rings_are_chebyshev_distances_with_even_sides_centred_between_taps():
    np.testing.assert_array_equal(offset_rings((5, 5))[2], [2, 1, 0, 1, 2])
    assert offset_rings((5, 5))[0].tolist() == [2] * 5
    np.testing.assert_array_equal(offset_rings((4, 4)), [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]])
    assert offset_rings((7,)).tolist() == [3, 2, 1, 0, 1, 2, 3]
    assert offset_rings((1, 1)).tolist() == [[0]]


def test_a_5x5_layer_zero_outside_its_centre_3x3_would_lose_nothing_as_a_3x3():
    w = torch.zeros(16, 8, 5, 5)
    w[:, :, 1:4, 1:4] = random_kernels(16, 8, 3, 3)
    out = kernel_footprint(w)
    assert "a 3×3 would keep 100% of this 5×5 layer's energy" in out["hint"]
    assert out["ring_energy"].shape == (3,) and out["ring_energy"][2] == 0
    assert out["offset_energy"].shape == (5, 5)
    assert out["offset_energy"].sum() == pytest.approx(1.0)
    expected = (w.double() ** 2).sum((0, 1)).numpy()
    np.testing.assert_allclose(out["offset_energy"], expected / expected.sum())


def test_energy_spread_over_a_random_5x5_gives_no_smaller_kernel_hint():
    out = kernel_footprint(random_kernels(64, 16, 5, 5))
    assert out["hint"] is None
    np.testing.assert_allclose(out["ring_energy"], [1 / 25, 8 / 25, 16 / 25], atol=0.01)  # ~ offsets per ring


def test_a_mostly_central_kernel_names_the_share_kept_rounded_down():
    w = torch.zeros(4, 2, 5, 5)
    w[:, :, 2, 2] = 1.0
    w[:, :, 0, 0] = 0.2  # outer ring: 0.04 / 1.04 of the energy → the 1×1 keeps 96.15%
    hints = kernel_footprint(w)["hint"].split("; ")  # the four filters are also duplicates
    assert hints[0] == "a 1×1 would keep 96% of this 5×5 layer's energy"


def test_1x1_kernels_get_no_ring_hint():
    out = kernel_footprint(random_kernels(32, 16, 1, 1))
    assert out["ring_energy"].tolist() == [1.0] and out["hint"] is None


def test_planted_duplicates_are_counted_exactly():
    w = random_kernels(40, 8, 3, 3)
    w[1] = 3 * w[0] + 0.01 * random_kernels(8, 3, 3, seed=1)  # near-copy
    w[2] = -w[0]  # opposite sign: |cos| = 1
    w[11] = 0.5 * w[10]
    out = kernel_footprint(w)
    # pairs (0,1), (0,2), (1,2), (10,11); five filters involved
    assert out["duplicate_pairs"] == 4
    assert out["duplicate_share"] == pytest.approx(5 / 40)
    assert "12% of filters (5) are near-duplicates (|cos| > 0.95) of another filter" in out["hint"]


def test_duplicate_search_in_chunks_matches_one_block(monkeypatch: pytest.MonkeyPatch):
    w = random_kernels(300, 8, 3, seed=4)
    w[50:100] = w[0:50] * torch.linspace(0.5, 2.0, 50).reshape(50, 1, 1)
    w[200] = w[299]
    whole = kernel_footprint(w)
    monkeypatch.setattr(footprint, "GRAM_CHUNK", 300 * 7)  # 7 rows at a time
    chunked = kernel_footprint(w)
    assert whole["duplicate_pairs"] == chunked["duplicate_pairs"] == 51
    assert whole["duplicate_share"] == chunked["duplicate_share"] == pytest.approx(102 / 300)


def test_filters_of_different_groups_are_never_duplicates():
    w = random_kernels(8, 1, 3, 3)  # depthwise-like: each group reads its own channel
    w[4] = w[0]
    assert kernel_footprint(w)["duplicate_pairs"] == 1
    assert kernel_footprint(w, groups=2)["duplicate_pairs"] == 0  # 0..3 and 4..7
    assert kernel_footprint(w, groups=8)["duplicate_pairs"] == 0


def test_dead_filters_are_counted_and_not_duplicates_of_each_other():
    w = random_kernels(20, 4, 3, 3)
    w[3] = 0
    w[7] = 0
    w[9] *= 1e-9
    out = kernel_footprint(w)
    assert out["dead_share"] == pytest.approx(3 / 20)
    assert out["duplicate_pairs"] == 0
    assert "15% of filters (3) are dead" in out["hint"]


def test_1d_kernels():
    w = torch.zeros(8, 4, 7)
    w[:, :, 2:5] = random_kernels(8, 4, 3)
    out = kernel_footprint(w)
    assert out["offset_energy"].shape == (7,) and out["ring_energy"].shape == (4,)
    assert out["hint"] == "a 3-tap kernel would keep 100% of this 7-tap layer's energy"


def test_3d_kernels_and_an_even_size():
    # Ring 0 of a 3×4×4 is the depth centre × the central 2×2; ring 1 is everything else.
    w = torch.zeros(8, 2, 3, 4, 4)
    w[:, :, :, 1:3, 1:3] = random_kernels(8, 2, 3, 2, 2)
    out = kernel_footprint(w)
    assert out["offset_energy"].shape == (3, 4, 4)
    centre = (w[:, :, 1] ** 2).sum() / (w**2).sum()
    np.testing.assert_allclose(out["ring_energy"], [centre, 1 - centre], rtol=1e-6)
    assert out["hint"] is None  # the other depths carry ~2/3 of the energy
    w[:, :, [0, 2]] = 0
    assert kernel_footprint(w)["hint"] == "a 1×2×2 would keep 100% of this 3×4×4 layer's energy"


def test_numpy_kernels_are_accepted():
    w = random_kernels(6, 3, 3, 3).numpy()
    out = kernel_footprint(w)
    assert out["offset_energy"].shape == (3, 3)


@pytest.mark.parametrize(
    "kernels, groups, name",
    [
        (torch.zeros(4, 3), 1, "kernels"),
        (torch.zeros(4, 3, 1, 1, 1, 1), 1, "kernels"),
        (torch.zeros(0, 3, 3, 3), 1, "kernels"),
        (torch.ones(6, 3, 3, 3), 4, "groups"),
        (torch.ones(6, 3, 3, 3), 0, "groups"),
    ],
)
def test_bad_arguments_fail_naming_the_argument(kernels: torch.Tensor, groups: int, name: str):
    with pytest.raises(ValueError, match=name):
        kernel_footprint(kernels, groups=groups)
