"""Planted truths for run-vs-run and epoch-vs-epoch similarity: a net with its filters permuted
computes exactly what the original computes, so matching must recover each permutation, CKA
must be 1 and aligned weight drift 0; independent nets must differ."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tb_convviz.analysis.similarity import (
    aligned_weight_drift,
    cka_matrix,
    debiased_cka_matrix,
    gram_matrix,
    linear_cka,
    match_filters,
    match_weights,
    response_profile,
)
from permuted import blob_data, permuted_pair_of, trained

CONVS = ("0", "3", "6")  # conv layers of `grouped_net`


@pytest.fixture(scope="module")
def permuted_pair():
    """(A, B, {layer: p}): B's filter j of each conv is A's filter p[j]; B computes what A does."""
    return permuted_pair_of(trained(seed=0))


def conv_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Each conv layer's output (N, F, H, W) on `images`."""
    outputs: dict[str, np.ndarray] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=n: outputs.__setitem__(n, o.detach().numpy()))
        for n, m in model.named_modules()
        if n in CONVS
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
    return outputs


@pytest.fixture(scope="module")
def probe() -> torch.Tensor:
    return blob_data(32, seed=5)[0]


def test_permuted_copy_computes_the_same_function(permuted_pair, probe):
    a, b, _ = permuted_pair
    torch.testing.assert_close(b(probe), a(probe), rtol=1e-5, atol=1e-5)


def test_matching_recovers_every_permutation(permuted_pair, probe):
    a, b, perms = permuted_pair
    acts_a, acts_b = conv_outputs(a, probe), conv_outputs(b, probe)
    for layer in CONVS:
        match, similarity, sign = match_filters(response_profile(acts_a[layer]), response_profile(acts_b[layer]))
        # B's filter j is A's filter p[j], so A's filter i sits at B's argsort(p)[i].
        np.testing.assert_array_equal(match, np.argsort(perms[layer]), err_msg=layer)
        np.testing.assert_allclose(similarity, 1.0, atol=1e-6)
        np.testing.assert_array_equal(sign, 1)


def test_cka_of_permuted_copy_is_one_for_every_layer(permuted_pair, probe):
    a, b, _ = permuted_pair
    acts_a, acts_b = conv_outputs(a, probe), conv_outputs(b, probe)
    for layer in CONVS:
        assert linear_cka(gram_matrix(acts_a[layer]), gram_matrix(acts_b[layer])) == pytest.approx(1.0, abs=1e-5)


def test_aligned_weight_drift_of_permuted_copy_is_zero(permuted_pair, probe):
    a, b, _ = permuted_pair
    acts_a, acts_b = conv_outputs(a, probe), conv_outputs(b, probe)
    match = {n: match_filters(response_profile(acts_a[n]), response_profile(acts_b[n]))[0] for n in CONVS}
    previous = {"0": None, "3": match["0"], "6": match["3"]}
    for layer in CONVS:
        wa, wb = a.get_submodule(layer).weight.detach().numpy(), b.get_submodule(layer).weight.detach().numpy()
        drift = aligned_weight_drift(wa, wb, match[layer], previous[layer])
        assert np.abs(drift["cosine_distance"]).max() < 1e-12, layer
        assert np.abs(drift["norm_change"]).max() < 1e-12, layer
    # Without aligning the input channels, the same pair looks changed: the alignment is what makes it 0.
    unaligned = aligned_weight_drift(a[3].weight.detach().numpy(), b[3].weight.detach().numpy(), match["3"], None)
    assert unaligned["cosine_distance"].mean() > 0.3


def test_independently_initialised_nets_have_low_cka_on_last_layers(probe):
    a, b = trained(seed=1), trained(seed=2)
    labels = blob_data(32, seed=5)[1]
    with torch.no_grad():  # both learned the task: the difference is not one of them failing
        assert (a(probe).argmax(1) == labels).all() and (b(probe).argmax(1) == labels).all()
    acts_a, acts_b = conv_outputs(a, probe), conv_outputs(b, probe)
    for layer in ("3", "6"):
        assert linear_cka(gram_matrix(acts_a[layer]), gram_matrix(acts_b[layer])) < 0.9, layer


def test_cka_from_grams_equals_the_feature_space_formula(probe):
    # 130 filters: more than one chunk of gram_matrix's filter loop.
    g = torch.Generator().manual_seed(3)
    x = nn.functional.conv2d(probe, torch.randn(130, 3, 3, 3, generator=g), padding=1).numpy()
    y = conv_outputs(trained(seed=1), probe)["6"]

    def centered(acts: np.ndarray) -> np.ndarray:
        flat = acts.reshape(acts.shape[0], -1).astype(np.float64)
        return flat - flat.mean(axis=0)

    xc, yc = centered(x), centered(y)
    direct = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(gram_matrix(x), gram_matrix(y)) == pytest.approx(direct, abs=1e-4)
    np.testing.assert_allclose(gram_matrix(x), xc @ xc.T, rtol=1e-10, atol=1e-8)
    assert 0.05 < direct < 0.95  # a pair that actually tests something


def test_gram_ignores_filter_order_and_accepts_tensors(probe):
    acts = conv_outputs(trained(seed=1), probe)["3"]
    order = np.random.default_rng(0).permutation(acts.shape[1])
    np.testing.assert_allclose(gram_matrix(acts[:, order]), gram_matrix(acts), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(gram_matrix(torch.from_numpy(acts)), gram_matrix(acts))


def test_cka_across_epochs_is_one_on_the_diagonal_and_falls_with_weight_change(probe):
    model = trained(seed=0)
    grams = []
    rng = torch.Generator().manual_seed(11)
    for noise in (0.0, 0.3, 1.0, 3.0):  # "epochs": every conv's weights moved further each time
        with torch.no_grad():
            for layer in CONVS:
                w = model.get_submodule(layer).weight
                w.add_(noise * w.std() * torch.randn(w.shape, generator=rng))
        grams.append(gram_matrix(conv_outputs(model, probe)["6"]))
    m = cka_matrix(grams)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-12)
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    assert np.all(np.diff(m[0]) < -1e-3), m[0]  # the further the weights moved, the lower
    assert m[0, -1] < 0.9
    np.testing.assert_allclose(cka_matrix(grams, grams[:1])[:, 0], m[:, 0], atol=1e-12)


def unbiased_hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased CKA straight from raw (uncentred) features (N, D): Song et al. 2012's unbiased
    HSIC of the linear kernels, written out term by term."""
    def hsic(k: np.ndarray, l: np.ndarray) -> float:
        n = k.shape[0]
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        ones = np.ones(n)
        return float((np.trace(k @ l) + ones @ k @ ones * (ones @ l @ ones) / ((n - 1) * (n - 2))
                      - 2 / (n - 2) * ones @ k @ l @ ones) / (n * (n - 3)))

    x, y = (a.reshape(a.shape[0], -1).astype(np.float64) for a in (x, y))
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_debiased_cka_from_centred_grams_equals_unbiased_hsic_of_raw_features(probe):
    """The stored Grams are of centred features: unbiased HSIC does not change under centring, on
    the whole probe and on any subset of it (what the jackknife's leave-one-out Grams are)."""
    a = conv_outputs(trained(seed=0), probe)
    b = conv_outputs(trained(seed=1), probe)
    grams_a = [gram_matrix(a[layer]) for layer in CONVS]
    grams_b = [gram_matrix(b[layer]) for layer in CONVS]
    found = debiased_cka_matrix(grams_a, grams_b)
    direct = np.array([[unbiased_hsic_cka(a[i], b[j]) for j in CONVS] for i in CONVS])
    np.testing.assert_allclose(found.value, direct, atol=1e-9)
    subset = np.arange(1, 20)
    np.testing.assert_allclose(
        debiased_cka_matrix([grams_a[2][np.ix_(subset, subset)]], [grams_b[2][np.ix_(subset, subset)]]).value[0, 0],
        unbiased_hsic_cka(a["6"][subset], b["6"][subset]), atol=1e-9)
    assert found.images == probe.shape[0]


def test_debiased_cka_is_near_zero_for_unrelated_features_and_one_for_a_permuted_copy(permuted_pair, probe):
    model_a, model_b, _ = permuted_pair
    acts_a, acts_b = conv_outputs(model_a, probe), conv_outputs(model_b, probe)
    own = debiased_cka_matrix([gram_matrix(acts_a[n]) for n in CONVS], [gram_matrix(acts_b[n]) for n in CONVS])
    np.testing.assert_allclose(np.diag(own.value), 1.0, atol=1e-9)
    # Two unrelated representations, 12 images of 1024 features each: the plain estimator reads
    # them as alike, the debiased one as unrelated.
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 64, 4, 4)), rng.normal(size=(12, 64, 4, 4))
    assert linear_cka(gram_matrix(x), gram_matrix(y)) > 0.7
    assert abs(debiased_cka_matrix([gram_matrix(x)], [gram_matrix(y)]).value[0, 0]) < 0.1


def test_debiased_cka_interval_covers_the_value_and_shrinks_as_images_grow():
    """A jackknife interval over images: checked against leaving each image out by hand, and
    narrower with more images of the same two representations."""
    model_a, model_b = trained(seed=0), trained(seed=1)
    images = blob_data(256, seed=9)[0]
    acts_a, acts_b = conv_outputs(model_a, images)["3"], conv_outputs(model_b, images)["3"]
    widths = []
    for n in (16, 64, 256):
        found = debiased_cka_matrix([gram_matrix(acts_a[:n])], [gram_matrix(acts_b[:n])])
        value, lo, hi = found.value[0, 0], found.lo[0, 0], found.hi[0, 0]
        assert lo < value < hi, (n, lo, value, hi)
        widths.append(hi - lo)
        if n == 16:
            left_out = np.array([unbiased_hsic_cka(np.delete(acts_a[:n], m, 0), np.delete(acts_b[:n], m, 0)) for m in range(n)])
            se = np.sqrt((n - 1) / n * ((left_out - left_out.mean()) ** 2).sum())
            from scipy import stats

            assert hi - value == pytest.approx(stats.t.ppf(0.975, n - 1) * se, rel=1e-6)
    assert widths[0] > widths[1] > widths[2], widths
    assert widths[2] < 0.5 * widths[0]


def test_debiased_cka_needs_four_images():
    grams = [gram_matrix(np.random.default_rng(s).normal(size=(3, 4, 2, 2))) for s in range(2)]
    found = debiased_cka_matrix(grams)
    assert np.isnan(found.value).all() and found.images == 3


def test_cka_of_a_constant_representation_is_nan():
    constant = gram_matrix(np.ones((5, 2, 3, 3)))
    varied = gram_matrix(np.random.default_rng(0).normal(size=(5, 2, 3, 3)))
    assert np.isnan(linear_cka(constant, varied))
    assert np.isnan(debiased_cka_matrix([constant], [varied]).value).all()


def test_match_filters_handles_sizes_signs_and_constant_profiles():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 20))
    b = np.concatenate([-a[[4, 1]] * 3.0 + 2.0, a[[0]], np.full((1, 20), 0.5)])  # 4 filters
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant profile must not produce a divide warning
        match, similarity, sign = match_filters(a, b)
    np.testing.assert_array_equal(match[[4, 1, 0]], [0, 1, 2])
    np.testing.assert_array_equal(sign[[4, 1, 0]], [-1, -1, 1])
    np.testing.assert_allclose(similarity[[4, 1, 0]], 1.0, atol=1e-12)
    # Two of A's six filters remain for B's constant filter 3: one takes it with similarity 0.
    rest = np.array([2, 3, 5])
    assert sorted(match[rest].tolist()) == [-1, -1, 3]
    taker = rest[match[rest] == 3][0]
    assert similarity[taker] == 0 and sign[taker] == 0
    unmatched = rest[match[rest] == -1]
    assert np.isnan(similarity[unmatched]).all() and (sign[unmatched] == 0).all()
    # Fewer filters in A: every one finds its copy in B.
    match_back, _, _ = match_filters(b[:3], a)
    np.testing.assert_array_equal(match_back, [4, 1, 0])


def test_one_match_filters_pairs_profiles_by_correlation_and_weights_by_cosine():
    """One matching for the whole package: analysis/compare.py no longer keeps a greedy one of its own."""
    import tb_convviz
    from tb_convviz.analysis import compare

    package = Path(tb_convviz.__file__).parent
    defining = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "def match_filters(" in p.read_text())
    assert defining == ["analysis/similarity.py"] and not hasattr(compare, "match_filters")
    # Kernels: a constant offset is part of what a kernel detects, so weights compare by cosine
    # (a centred correlation would call the DC kernel 0 and the offset edge a plain edge).
    dc, edge = np.ones((1, 3, 3)), np.array([[[-1.0, 0.0, 1.0]] * 3])
    a = np.stack([dc, edge + 2.0, edge])
    b = a[[2, 0, 1]] * np.array([1.0, -1.0, 1.0]).reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(match_weights(a, b), [1, 2, 0])
    np.testing.assert_array_equal(match_weights(a, b), match_filters(a, b, centred=False)[0])
    _, similarity, sign = match_filters(a, b, centred=False)
    np.testing.assert_allclose(similarity, 1.0)
    np.testing.assert_array_equal(sign, [-1, 1, 1])


def test_response_profile_is_per_filter_mean_per_image():
    acts = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(response_profile(acts), acts.mean(axis=2).T)
    assert response_profile(torch.zeros(5, 7, 2, 2, 2)).shape == (7, 5)
