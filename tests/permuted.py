"""A small net with a planted truth for run-vs-run comparison: the same net with the filters of
every conv permuted (and every reader of those channels permuted to match) computes exactly what
the original computes."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from training import sgd_step

CLASSES = 4


def grouped_net(seed: int) -> nn.Sequential:
    """conv 3→6, BN, ReLU, conv 6→8, BN, ReLU, grouped conv 8→8 (2 groups), ReLU, pool, linear."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, CLASSES),
    )


def blob_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 8, 8) noise images, each with a bright 4×4 blob in the quadrant named by its label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    images = 0.3 * torch.randn(n, 3, 8, 8, generator=g)
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 2)
        images[i, :, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4] += 1.0
    return images, labels


def trained(seed: int) -> nn.Sequential:
    """`grouped_net(seed)` after 50 SGD steps on 64 blob images: enough to classify the probe."""
    model = grouped_net(seed)
    images, labels = blob_data(64, seed=100)
    for _ in range(50):
        sgd_step(model, images, labels, lr=0.3)
    return model.eval()


def permute_conv(conv: nn.Conv2d, p_out: np.ndarray, p_in: np.ndarray) -> None:
    """Filter j of the result is filter p_out[j]; its input channel c is the one the original read
    from channel p_in[global c] (p_out and p_in must keep each group's channels together)."""
    w = conv.weight.detach().clone()
    per_group = w.shape[1]
    out_per_group = w.shape[0] // conv.groups
    new = torch.empty_like(w)
    for j in range(w.shape[0]):
        group = j // out_per_group
        src_channels = [p_in[group * per_group + c] % per_group for c in range(per_group)]
        new[j] = w[p_out[j]][src_channels]
    with torch.no_grad():
        conv.weight.copy_(new)
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[p_out].clone())


def permute_batchnorm(bn: nn.BatchNorm2d, p: np.ndarray) -> None:
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            t.copy_(t[p].clone())


def block_permutation(group_order: list[int], within: list[int]) -> np.ndarray:
    """A permutation of len(group_order) × len(within) channels that moves whole groups."""
    size = len(within)
    return np.array([group_order[j // size] * size + within[j % size] for j in range(len(group_order) * size)])


def permuted_pair_of(a: nn.Sequential):
    """(A, B, {layer: p}) for a `grouped_net` A: B's filter j of each conv is A's filter p[j]; B
    computes what A does."""
    perms = {
        "0": np.array([5, 2, 0, 4, 1, 3]),
        "3": block_permutation([1, 0], [2, 0, 3, 1]),
        "6": block_permutation([1, 0], [1, 3, 0, 2]),
    }
    # None is its own inverse, so a matcher returning p instead of argsort(p) would fail.
    assert all((np.argsort(p) != p).any() for p in perms.values())
    b = copy.deepcopy(a)
    permute_conv(b[0], perms["0"], np.arange(3))
    permute_batchnorm(b[1], perms["0"])
    permute_conv(b[3], perms["3"], perms["0"])
    permute_batchnorm(b[4], perms["3"])
    permute_conv(b[6], perms["6"], perms["3"])
    with torch.no_grad():
        b[10].weight.copy_(b[10].weight[:, perms["6"]].clone())
    return a, b, perms
