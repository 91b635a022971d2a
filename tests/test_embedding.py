"""Filter maps: PCA finds planted structure, Procrustes undoes a planted rotation exactly,
t-SNE keeps planted clusters apart, and a missing optional package names the extra to install."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from tb_convviz.analysis.embedding import align_embeddings, embedding_trail, filter_embedding


def rotation(degrees: float, reflect: bool = False) -> np.ndarray:
    t = np.deg2rad(degrees)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return r @ np.diag([1.0, -1.0]) if reflect else r


def clustered_profiles(per_cluster: int = 20, probe: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(3 × per_cluster, probe) profiles in three tight clusters, and each filter's cluster."""
    rng = np.random.default_rng(seed)
    centres = 5.0 * rng.normal(size=(3, probe))
    labels = np.repeat(np.arange(3), per_cluster)
    return centres[labels] + 0.3 * rng.normal(size=(labels.size, probe)), labels


def test_pca_recovers_a_planted_rank_two_structure():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(40, 2)) * [3.0, 1.0]  # each filter's position in a planted plane
    profile = latent @ rng.normal(size=(2, 25)) + 7.0 + 1e-9 * rng.normal(size=(40, 25))
    coords = filter_embedding(profile, "pca")
    assert coords.shape == (40, 2) and coords.dtype == np.float64
    # The map is the planted plane up to an invertible linear map: it explains the latent exactly.
    design = np.hstack([coords, np.ones((40, 1))])
    fit, *_ = np.linalg.lstsq(design, latent, rcond=None)
    np.testing.assert_allclose(design @ fit, latent, atol=1e-6)
    # A rank-one profile has nothing on the second axis.
    line = filter_embedding(np.outer(rng.normal(size=40), rng.normal(size=25)), "pca")
    np.testing.assert_allclose(line[:, 1], 0.0, atol=1e-9)
    assert np.abs(line[:, 0]).max() > 1.0


def test_pca_orientation_is_deterministic_under_sign_flips():
    profile, _ = clustered_profiles()
    np.testing.assert_allclose(filter_embedding(-profile, "pca"), filter_embedding(profile, "pca"), atol=1e-9)


def test_pca_of_too_few_filters_pads_with_zeros():
    np.testing.assert_array_equal(filter_embedding(np.ones((1, 4)), "pca"), np.zeros((1, 2)))
    assert filter_embedding(np.zeros((0, 4)), "pca").shape == (0, 2)


@pytest.mark.parametrize("reflect", [False, True])
def test_procrustes_recovers_a_planted_rotation_exactly(reflect):
    prev = np.random.default_rng(2).normal(size=(30, 2))
    cur = 2.5 * prev @ rotation(37.0, reflect) + [4.0, -1.0]
    np.testing.assert_allclose(align_embeddings(prev, cur), prev, atol=1e-12)
    # Without scale, only the size stays as the method drew it.
    unscaled = align_embeddings(prev, cur, scale=False)
    np.testing.assert_allclose(unscaled - unscaled.mean(0), 2.5 * (prev - prev.mean(0)), atol=1e-12)


def test_trail_keeps_a_slowly_moving_map_in_register():
    rng = np.random.default_rng(3)
    truth = [rng.normal(size=(25, 2))]
    for _ in range(4):
        truth.append(truth[-1] + 0.01 * rng.normal(size=(25, 2)))
    # Each epoch's map comes back arbitrarily rotated, reflected, scaled and shifted.
    drawn = [(1 + i) * t @ rotation(70.0 * i, reflect=i % 2 == 1) + i for i, t in enumerate(truth)]
    trail = embedding_trail(drawn)
    assert trail.shape == (5, 25, 2)
    np.testing.assert_array_equal(trail[0], drawn[0])
    steps = np.linalg.norm(np.diff(trail, axis=0), axis=2)
    assert steps.max() < 0.1  # only the planted 0.01-scale moves remain
    unaligned = np.linalg.norm(np.diff(np.stack(drawn), axis=0), axis=2)
    assert unaligned.mean() > 1.0


def test_tsne_keeps_planted_clusters_apart_and_is_seeded():
    profile, labels = clustered_profiles()
    coords = filter_embedding(profile, "tsne", seed=4)
    assert coords.shape == (60, 2)
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(labels[distances.argmin(axis=1)], labels)
    np.testing.assert_array_equal(filter_embedding(profile, "tsne", seed=4), coords)


def test_nonlinear_methods_fall_back_to_pca_for_a_handful_of_filters():
    profile = np.random.default_rng(5).normal(size=(3, 10))
    with pytest.warns(UserWarning, match="too few"):
        coords = filter_embedding(profile, "tsne")
    np.testing.assert_array_equal(coords, filter_embedding(profile, "pca"))


@pytest.mark.parametrize(
    ("method", "module", "package"), [("umap", "umap", "umap-learn"), ("tsne", "sklearn.manifold", "scikit-learn")]
)
def test_missing_package_names_the_embed_extra(monkeypatch, method, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # `import` of it now raises ImportError
    with pytest.raises(ImportError, match=rf"{package}.*tb_convviz\[embed\]"):
        filter_embedding(clustered_profiles()[0], method)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        filter_embedding(np.zeros((6, 3)), "isomap")
