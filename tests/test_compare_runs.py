"""Run vs run and epoch vs epoch through the logs: the callback's Gram and profile records, the
reader's match/cka/embedding and the routes, on a planted permuted copy of a trained net."""
from __future__ import annotations

import copy
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from permuted import blob_data, grouped_net, permuted_pair_of, trained
from test_similarity import conv_outputs, unbiased_hsic_cka
from wire import decode_wire
from tb_convviz import ConvViz, load
from tb_convviz.analysis.similarity import pair_filters, response_profile
from tb_convviz.read.memo import Memo
from tb_convviz.schema import format as fmt
from tb_convviz.plugin.plugin import ConvVizPlugin

CONVS = ("0", "3", "6")
BASE = "/data/plugin/convviz"


@pytest.fixture(scope="module")
def logs_and_perms(tmp_path_factory):
    """Runs "a" (trained), "b" (its permuted copy) and "other" (another seed), 3 steps each over the
    same probe; between steps every run's weights take the same scaled nudge."""
    d = tmp_path_factory.mktemp("compare_runs")
    a, b, perms = permuted_pair_of(trained(seed=0))
    other = trained(seed=2)
    probe = blob_data(32, seed=5)
    for name, model in (("a", a), ("b", b), ("other", other)):
        with ConvViz(d / name, probe=probe, perturbations=False, background=False) as viz:
            for step in range(3):
                viz.log(model, step)
                with torch.no_grad():
                    for p in model.parameters():
                        p.mul_(1.1)
    return load(d), perms


def test_matching_recovers_every_planted_permutation(logs_and_perms):
    logs, perms = logs_and_perms
    for layer in CONVS:
        match, similarity = logs.match("a", "b", layer, 2, 2)
        np.testing.assert_array_equal(match, np.argsort(perms[layer]))
        assert (similarity > 0.999).all()


def test_cka_of_a_permuted_copy_is_one_and_of_another_run_is_not(logs_and_perms):
    logs, _ = logs_and_perms
    for layer in CONVS:
        assert logs.cka("a", layer, 1, "b", layer, 1) == pytest.approx(1.0, abs=1e-5)
    for layer in ("3", "6"):
        assert logs.cka("a", layer, 0, "other", layer, 0) < 0.9, layer


def test_cka_equals_a_direct_computation(logs_and_perms):
    """Debiased CKA read from the logs (float16 centred Grams) against unbiased HSIC of the full
    activations of the same images; the plain estimator against its own formula."""
    logs, _ = logs_and_perms
    a = trained(seed=0)
    images, _ = blob_data(32, seed=5)
    outputs = {}
    hooks = [a.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: outputs.__setitem__(n, o.flatten(1).double())) for n in CONVS]
    with torch.no_grad():
        a(images)
    for h in hooks:
        h.remove()
    for first, second in (("0", "6"), ("0", "3"), ("3", "6")):
        direct = unbiased_hsic_cka(outputs[first].numpy(), outputs[second].numpy())
        assert logs.cka("a", first, 0, "a", second, 0) == pytest.approx(direct, abs=1e-3)
        value, lo, hi = logs.cka("a", first, 0, "a", second, 0, interval=True)
        assert value == pytest.approx(direct, abs=1e-3) and lo < value < hi
    x, y = (outputs[n] - outputs[n].mean(0) for n in ("0", "6"))
    plain = float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))
    assert logs.cka("a", "0", 0, "a", "6", 0, debiased=False) == pytest.approx(plain, abs=1e-4)
    # The two estimators differ here by more than the 1e-3 the debiased one is held to.
    assert abs(plain - unbiased_hsic_cka(outputs["0"].numpy(), outputs["6"].numpy())) > 3e-3
    with pytest.raises(ValueError, match="debiased"):
        logs.cka("a", "0", 0, "a", "6", 0, debiased=False, interval=True)


@pytest.fixture(scope="module")
def client(logs_and_perms) -> Client:
    logs, _ = logs_and_perms
    plugin = ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=""))
    return Client(TensorBoardWSGI([plugin]))


def get(client: Client, route: str, status: int = 200) -> dict:
    r = client.get(f"{BASE}/{route}")
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    assert r.mimetype == "application/json"
    return r.get_json()


def test_aligned_run_vs_run_shows_zero_drift_for_a_permuted_copy(client, logs_and_perms):
    _, perms = logs_and_perms
    for layer in CONVS:
        aligned = get(client, f"compare?layer={layer}&run_a=a&step_a=0&run_b=b&step_b=0&align=aligned")
        assert aligned["match"] == np.argsort(perms[layer]).tolist() and aligned["match_basis"] == "activations"
        np.testing.assert_allclose(decode_wire(aligned["metrics"]["cosine_distance"]), 0, atol=1e-6)
        assert (layer == "0") == (aligned["aligned_inputs"] is None)  # the first layer reads the image
    unaligned = get(client, "compare?layer=3&run_a=a&step_a=0&run_b=b&step_b=0&align=match")
    assert decode_wire(unaligned["metrics"]["cosine_distance"]).max() > 0.1  # input channels in another order


def test_cka_routes(client, logs_and_perms):
    """Every CKA route answers the debiased value, its interval and how many images it used."""
    logs, _ = logs_and_perms
    layers = get(client, "cka_layers?run_a=a&step_a=2&run_b=other&step_b=1")
    matrix, lo, hi = (np.array(layers[k], dtype=float).reshape(3, 3) for k in ("cka", "cka_lo", "cka_hi"))
    assert layers["images"] == 32 and "debiased" in layers["estimator"]
    for i, first in enumerate(CONVS):
        for j, second in enumerate(CONVS):
            expected = logs.cka("a", first, 2, "other", second, 1, interval=True)
            np.testing.assert_allclose((matrix[i, j], lo[i, j], hi[i, j]), expected, atol=1e-9)
    assert (lo < matrix).all() and (matrix < hi).all()
    own = get(client, "cka_layers?run_a=a&step_a=2&run_b=b&step_b=2")
    np.testing.assert_allclose(np.diag(np.array(own["cka"]).reshape(3, 3)), 1, atol=1e-5)
    epochs = get(client, "cka_epochs?run=a&layer=3")
    m = np.array(epochs["cka"]).reshape(3, 3)
    assert epochs["steps"] == [0, 1, 2] and epochs["images"] == 32
    np.testing.assert_allclose(np.diag(m), 1, atol=1e-6)
    assert m[0, 2] == pytest.approx(logs.cka("a", "3", 0, "a", "3", 2), abs=1e-9)
    assert len(epochs["cka_lo"]) == len(epochs["cka_hi"]) == 9
    final = get(client, "cka_final?run=a")
    assert final["layers"] == list(CONVS) and final["cka"]["0"][-1] == pytest.approx(1.0, abs=1e-6)
    assert final["cka"]["3"][0] == pytest.approx(logs.cka("a", "3", 0, "a", "3", 2), abs=1e-9)
    assert final["cka_lo"]["3"][0] < final["cka"]["3"][0] < final["cka_hi"]["3"][0] and final["images"] == 32


def test_embedding_route_gives_an_aligned_map_per_step(client):
    answer = get(client, "embedding?run=a&layer=3&method=pca")
    assert answer["steps"] == [0, 1, 2] and answer["points"]["shape"] == [3, 8, 2]


@pytest.mark.parametrize(
    "route, status",
    [
        ("cka_layers?run_a=a&step_a=9&run_b=b&step_b=0", 404),
        ("cka_layers?run_a=a&step_a=x&run_b=b&step_b=0", 400),
        ("cka_epochs?run=a&layer=nope", 404),
        ("cka_final?run=missing", 404),
        ("embedding?run=a&layer=3&method=mds", 400),
        ("compare?layer=3&run_a=a&step_a=0&run_b=b&step_b=0&align=sideways", 400),
    ],
)
def test_bad_parameters_of_the_new_routes(client, route, status):
    assert get(client, route, status)["error"]


# -- run vs run pairs: one solve per (run pair, layer, pair step), a chance level, bounded solves --


@pytest.fixture
def counted_solves(monkeypatch):
    """Every `pair_filters` solve the reader makes, in a fresh matching memo, each taking at least
    `delay[0]` seconds (so that concurrent requests really overlap)."""
    import tb_convviz.read.reader as reader_module

    solves, delay = [], [0.0]
    real = reader_module.pair_filters

    def slow(a, b):
        solves.append(1)
        time.sleep(delay[0])
        return real(a, b)

    monkeypatch.setattr(reader_module, "pair_filters", slow)
    monkeypatch.setattr(reader_module, "_MATCHES", Memo(16))
    return solves, delay


def fresh_client(logs) -> Client:
    """A client of a new plugin: no answers cached by earlier tests."""
    return Client(TensorBoardWSGI([ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=""))]))


def test_run_vs_run_pairs_once_at_the_pair_step_and_keeps_the_pairing_across_steps(logs_and_perms, counted_solves):
    logs, perms = logs_and_perms
    solves, _ = counted_solves
    client = fresh_client(logs)
    first = get(client, "compare?layer=3&run_a=a&step_a=0&run_b=other&step_b=0&align=match")
    assert first["pair_step"] == 2 and first["pairing"]["pair_step"] == 2  # the last step both runs have profiles for
    assert first["pairing"]["profile_steps"] == [2, 2] and first["pairing"]["images"] == 32
    assert len(solves) == 1
    later = get(client, "compare?layer=3&run_a=a&step_a=1&run_b=other&step_b=2&align=match")
    assert len(solves) == 1  # the slider moved: the same pairs, followed to other steps
    assert later["match"] == first["match"] and later["pair_step"] == 2
    # The pairs' similarity is measured at the shown steps, and equals the solve's at the pair step.
    at_pair_step = get(client, "compare?layer=3&run_a=a&step_a=2&run_b=other&step_b=2&align=match")
    match, similarity = logs.match("a", "other", "3", 2, 2)
    np.testing.assert_allclose(decode_wire(at_pair_step["metrics"]["match_similarity"]), similarity, atol=1e-6)
    assert at_pair_step["median_similarity"] == pytest.approx(first["pairing"]["median_similarity"], abs=1e-6)
    moved = decode_wire(later["metrics"]["match_similarity"])
    assert np.isfinite(moved).all() and not np.allclose(moved, similarity, atol=1e-4)
    chosen = get(client, "compare?layer=3&run_a=a&step_a=1&run_b=other&step_b=1&align=match&pair_step=0")
    assert chosen["pair_step"] == 0 and len(solves) == 2
    assert "pair_step" in get(client, "compare?layer=3&run_a=a&step_a=1&run_b=other&step_b=1&align=match&pair_step=x", 400)["error"]
    assert get(client, "compare?layer=3&run_a=a&step_a=1&run_b=other&step_b=1&align=match&pair_step=-1", 404)["error"]


def test_chance_level_is_far_below_a_permuted_copys_pair_similarity(logs_and_perms):
    logs, perms = logs_and_perms
    client = fresh_client(logs)
    for layer in CONVS:
        answer = get(client, f"compare?layer={layer}&run_a=a&step_a=2&run_b=b&step_b=2&align=match")
        pairing = answer["pairing"]
        assert answer["match"] == np.argsort(perms[layer]).tolist()
        assert pairing["median_similarity"] > 0.999
        assert pairing["chance"] < 0.5 and pairing["median_similarity"] - pairing["chance"] > 0.5, pairing
        assert pairing["shuffles"] == 16


def test_chance_level_of_unrelated_random_networks_is_close_to_their_pair_similarity():
    """Two random networks whose responses share nothing (each sees its own noise images): the
    optimal assignment still finds pairs of |correlation| ~0.25 on 32 images, and the chance level
    says so. (Random networks on the same images do share what the images hold — their energy —
    and rightly read above chance.)"""
    gaps = []
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        outputs = [conv_outputs(grouped_net(seed + offset).eval(), torch.randn(32, 3, 8, 8, generator=g)) for offset in (0, 100)]
        for layer in CONVS:
            found = pair_filters(response_profile(outputs[0][layer]), response_profile(outputs[1][layer]))
            assert found.chance > 0.15  # well above 0: what makes a bare median misleading
            gaps.append(found.median_similarity - found.chance)
    assert max(abs(g) for g in gaps) < 0.15 and abs(float(np.mean(gaps))) < 0.05, gaps


def test_sign_flipped_pairs_are_marked_not_most_changed(logs_and_perms, tmp_path):
    """B = A with one first-layer filter's kernel and bias negated (its responses anti-correlate):
    the pair is found, flagged as flipped, and its drift is 0, not 2."""
    a = trained(seed=0)
    b = copy.deepcopy(a)
    with torch.no_grad():
        b[0].weight[2].neg_()
        b[0].bias[2].neg_()
    probe = blob_data(32, seed=5)
    for name, model in (("a", a), ("b", b)):
        with ConvViz(tmp_path / name, probe=probe, perturbations=False, background=False) as viz:
            viz.log(model, 0)
    client = fresh_client(load(tmp_path))
    answer = get(client, "compare?layer=0&run_a=a&step_a=0&run_b=b&step_b=0&align=aligned")
    assert answer["match"] == list(range(6))
    flipped = decode_wire(answer["metrics"]["sign_flipped"])
    np.testing.assert_array_equal(flipped, [0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(decode_wire(answer["metrics"]["cosine_distance"]), 0, atol=1e-6)
    assert answer["sign_flipped"] == 1


def test_identical_concurrent_requests_share_one_solve(logs_and_perms, counted_solves):
    logs, _ = logs_and_perms
    solves, delay = counted_solves
    delay[0] = 0.5
    client = fresh_client(logs)
    urls = [f"{BASE}/compare?layer=6&run_a=a&step_a=1&run_b=other&step_b=1&align=match"] * 4
    # Two other steps with the same pairing, at the same time: they wait for the same solve too.
    urls += [f"{BASE}/compare?layer=6&run_a=a&step_a={s}&run_b=other&step_b={s}&align=match" for s in (0, 2)]
    with ThreadPoolExecutor(len(urls)) as pool:
        answers = list(pool.map(client.get, urls))
    assert [r.status_code for r in answers] == [200] * len(urls)
    assert len(solves) == 1
    assert len({json.dumps(r.get_json()["match"]) for r in answers}) == 1


def test_solves_at_once_are_bounded_and_the_rest_get_a_503_with_retry_after(logs_and_perms, counted_solves, monkeypatch):
    import tb_convviz.read.reader as reader_module

    logs, _ = logs_and_perms
    solves, delay = counted_solves
    delay[0] = 1.5
    monkeypatch.setattr(reader_module, "_SOLVES", threading.BoundedSemaphore(1))
    monkeypatch.setattr(reader_module, "SOLVE_WAIT_S", 0.2)
    client = fresh_client(logs)
    urls = [f"{BASE}/compare?layer={layer}&run_a=a&step_a=1&run_b=other&step_b=1&align=match" for layer in ("3", "6")]
    with ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(client.get, url) for url in urls]
        time.sleep(0.4)
        start = time.perf_counter()
        index = client.get(f"{BASE}/index")
        index_s = time.perf_counter() - start
        answers = [f.result() for f in pending]
    assert index.status_code == 200 and index_s < 1.0  # other routes answer while a solve runs
    assert sorted(r.status_code for r in answers) == [200, 503]
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["Retry-After"] == str(reader_module.SOLVE_RETRY_S) and "try again" in busy.get_json()["error"]
    assert len(solves) == 1  # the refused one never started a solve
    # Refused, not remembered: asked again, it is answered.
    refused = urls[[r.status_code for r in answers].index(503)]
    assert get(client, refused.removeprefix(BASE + "/"))["pairing"]["median_similarity"] > 0
    assert len(solves) == 2


def test_index_offers_only_the_filter_map_methods_whose_package_is_installed(logs_and_perms, monkeypatch):
    import tb_convviz.analysis.embedding as embedding_module

    logs, _ = logs_and_perms
    assert get(fresh_client(logs), "index")["embedding_methods"] == list(embedding_module.available_methods())
    monkeypatch.setattr(embedding_module.importlib.util, "find_spec", lambda name: None)  # no optional package
    client = fresh_client(logs)
    assert get(client, "index")["embedding_methods"] == ["pca"]
    assert "['pca']" in get(client, "embedding?run=a&layer=3&method=tsne", 400)["error"]


def test_filter_map_axes_carry_their_share_of_variance(client, logs_and_perms):
    logs, _ = logs_and_perms
    answer = get(client, "embedding?run=a&layer=6&method=pca")
    shares = decode_wire(answer["variance_share"])
    assert shares.shape == (3, 2)
    profile = logs.profile("a", "6", 0)
    centred = profile - profile.mean(axis=0)
    spectrum = np.linalg.svd(centred, compute_uv=False) ** 2
    np.testing.assert_allclose(shares[0], spectrum[:2] / spectrum.sum(), rtol=1e-4)  # the first map is not rotated
    assert (shares.sum(axis=1) <= 1 + 1e-6).all() and (shares > 0).all()


def test_a_refused_run_vs_run_request_reads_no_kernels_and_no_profiles(logs_and_perms, counted_solves, monkeypatch):
    """With every solve slot taken, a request needing a new solve is refused before it decodes the
    two runs' kernels or profiles: GIL-bound work the server's other routes would wait behind."""
    import tb_convviz.plugin.payloads as payloads_module
    import tb_convviz.read.reader as reader_module

    logs, _ = logs_and_perms
    slots = threading.BoundedSemaphore(1)
    monkeypatch.setattr(reader_module, "_SOLVES", slots)
    monkeypatch.setattr(reader_module, "SOLVE_WAIT_S", 0.1)
    kernels, decoded = [], []
    real_weights, real_decode = payloads_module._weights_for, reader_module.ConvVizReader._decode
    monkeypatch.setattr(payloads_module, "_weights_for", lambda *a: kernels.append(a) or real_weights(*a))
    monkeypatch.setattr(reader_module.ConvVizReader, "_decode",
                        lambda self, run, layer, kind, d, *rest: decoded.append(kind) or real_decode(self, run, layer, kind, d, *rest))
    client = fresh_client(logs)
    slots.acquire()  # a solve in progress elsewhere
    try:
        r = client.get(f"{BASE}/compare?layer=3&run_a=a&step_a=1&run_b=other&step_b=1&align=match")
    finally:
        slots.release()
    assert r.status_code == 503
    assert kernels == [] and fmt.KIND_PROFILE not in decoded
    assert get(client, "compare?layer=3&run_a=a&step_a=1&run_b=other&step_b=1&align=match")["pairing"]  # then answered
    assert kernels  # the answer diffs the kernels
