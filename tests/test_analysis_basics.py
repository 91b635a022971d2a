"""Pure analysis helpers the callback relies on: map budgets, BN folding, drift, matching."""
import numpy as np
import torch

from tb_convviz.analysis.activations import map_resolution
from tb_convviz.analysis.compare import most_changed_first, weight_drift
from tb_convviz.analysis.kernels import fold_batchnorm
from tb_convviz.analysis.similarity import match_weights


def test_small_nets_keep_full_default_maps():
    assert map_resolution([(8, 30, 30), (16, 14, 14)], images=4, max_size=16, budget_bytes=500_000) == (4, 16)


def test_big_nets_shrink_sides_then_images_to_fit_the_budget():
    resnet = [(64, 56, 56)] + [(64, 28, 28)] * 4 + [(128, 14, 14)] * 5 + [(256, 7, 7)] * 5 + [(512, 4, 4)] * 5
    n, side = map_resolution(resnet, images=4, max_size=16, budget_bytes=500_000)
    cost = sum(n * f * (min(h, side) * min(w, side) + 8) for f, h, w in resnet)
    assert cost <= 500_000
    assert side >= 8 or n == 1  # resolution is kept down to 8 before images are dropped
    assert map_resolution(resnet, images=4, max_size=16, budget_bytes=1) == (1, 1)


def test_fold_batchnorm_matches_conv_then_bn_in_eval_mode():
    conv = torch.nn.Conv2d(2, 3, 3)
    bn = torch.nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 2, 6, 6)
    scale, bias = fold_batchnorm(conv.bias.detach(), bn.running_mean, bn.running_var, bn.weight.detach(), bn.bias.detach(), bn.eps)
    folded = torch.nn.functional.conv2d(x, conv.weight.detach() * scale.reshape(-1, 1, 1, 1), bias)
    torch.testing.assert_close(folded, bn(conv(x)).detach(), atol=1e-5, rtol=1e-5)


def test_drift_of_unchanged_flipped_and_zeroed_filters():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [0.0, -2.0], [0.0, 0.0], [0.0, 0.0]])
    d = weight_drift(a, b)
    np.testing.assert_allclose(d["cosine_distance"], [0, 2, 1, 0])
    np.testing.assert_allclose(d["norm_change"], [1, 0, -1, 0])
    assert most_changed_first(d["cosine_distance"]).tolist() == [1, 2, 0, 3]


def test_matching_pairs_shuffled_and_negated_filters():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 4, 3, 3))
    perm = np.array([3, 0, 5, 1, 4, 2])
    b = a[perm] * np.array([1, -1, 1, 1, -1, 1]).reshape(-1, 1, 1, 1)
    match = match_weights(a, b)
    assert (perm[match] == np.arange(6)).all()
