"""Callback → event file → TensorBoard's data provider → arrays equal to the model's own."""
import numpy as np
import pytest
import torch
from torch import nn

from models import bn_cnn, every_conv_kind, probe_images
from tb_convviz import ConvViz, load
from tb_convviz.model.layers import filter_weights


def _tolerance(w: np.ndarray) -> np.ndarray:
    """The stated q8 tolerance, per filter: (max − min) / 510."""
    flat = w.reshape(w.shape[0], -1)
    return (flat.max(1) - flat.min(1)) / 510 + 1e-7


@pytest.fixture(scope="module")
def all_kinds_logs(tmp_path_factory):
    model = every_conv_kind()
    logdir = tmp_path_factory.mktemp("logs")
    viz = ConvViz(logdir / "run", probe=probe_images(), keep_all=True)
    expected = {}
    for epoch in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        viz.log(model, epoch)
        expected[epoch] = {n: filter_weights(m).clone().numpy() for n, m in model.named_modules() if hasattr(m, "transposed")}
    viz.close()
    return model, load(logdir), expected


KINDS = ["c1d", "t1d", "c2d", "grouped", "depthwise", "t2d", "c3d", "t3d"]


@pytest.mark.parametrize("layer", KINDS)
def test_kernels_equal_model_weights_within_tolerance(all_kinds_logs, layer):
    model, logs, expected = all_kinds_logs
    assert logs.steps("run", layer) == [0, 1, 2]
    for step in (0, 2):
        want = expected[step][layer]
        got = logs.kernels("run", layer, step)
        assert got.shape == want.shape
        err = np.abs(got - want).reshape(want.shape[0], -1).max(1)
        assert np.all(err <= _tolerance(want)), (layer, step, err.max())


def test_transposed_kernels_are_regrouped_filter_first():
    conv = nn.ConvTranspose2d(4, 6, 3, groups=2)
    w = filter_weights(conv)
    assert w.shape == (6, 2, 3, 3)
    # Output filter 4 belongs to group 1 (inputs 2..3), column 1 of that group's block.
    torch.testing.assert_close(w[4], conv.weight.detach()[2:4, 1])


def test_layer_facts_describe_each_conv(all_kinds_logs):
    _, logs, _ = all_kinds_logs
    info = logs.layer_info("run", "depthwise")
    assert (info["kind"], info["filters"], info["in_per_group"], info["groups"]) == ("Conv2d", 8, 1, 8)
    assert logs.layer_info("run", "c3d")["dims"] == 3
    assert logs.layer_info("run", "t1d")["transposed"] is True
    assert logs.layers("run") == KINDS  # model order, not alphabetical


def test_activation_maps_equal_the_layer_outputs(all_kinds_logs):
    model, logs, _ = all_kinds_logs
    outputs = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: outputs.__setitem__(n, o)) for n, m in model.named_modules() if n in KINDS]
    model.eval()
    with torch.no_grad():
        model(probe_images())
    for h in hooks:
        h.remove()
    for name in KINDS:
        want = outputs[name].numpy()  # weights are those of the last logged step
        got = logs.activations("run", name, 2)
        assert got.shape == want.shape
        span = want.reshape(want.shape[0] * want.shape[1], -1)
        tol = (span.max(1) - span.min(1)) / 510 + 1e-6
        assert np.all(np.abs(got - want).reshape(span.shape).max(1) <= tol), name
        stats = logs.filter_stats("run", name, 2)
        # Per-filter statistics are f16s: within 2^-11 of the value (format.py), plus float32 sums.
        per_filter = tuple(i for i in range(want.ndim) if i != 1)
        np.testing.assert_allclose(stats["act_mean"], want.mean(axis=per_filter), rtol=2**-11 + 1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["act_frac_pos"], (want > 0).mean(axis=per_filter), rtol=2**-11, atol=1e-6)


def test_effective_kernel_folds_the_following_batchnorm(tmp_path):
    model = bn_cnn()
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial statistics and affine parameters
        for _ in range(3):
            model(torch.randn(8, 3, 6, 6) * 3 + 1)
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.uniform_(-1, 1)
    viz = ConvViz(tmp_path, probe=probe_images(size=6))
    viz.log(model, 0)
    viz.close()
    logs = load(tmp_path)
    run = logs.runs()[0]
    conv, bn = model[0], model[1]
    model.eval()
    x = probe_images(size=6)
    with torch.no_grad():
        want = bn(conv(x))
    eff = torch.from_numpy(logs.effective_kernels(run, "0", 0))
    bias = torch.from_numpy(logs.bundle(run, "0", "kernels", 0).array("effective_bias"))
    got = nn.functional.conv2d(x, eff, bias, padding=1)
    assert torch.allclose(got, want, atol=0.05 * want.abs().max().item())
    assert logs.layer_info(run, "0")["batchnorm"] == "1"


def test_thirty_epochs_are_all_kept_when_loaded(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    viz = ConvViz(tmp_path / "r", probe=torch.randn(2, 1, 5, 5))
    for epoch in range(30):
        viz.log(model, epoch)
    viz.close()
    logs = load(tmp_path)
    assert logs.steps("r", "0") == list(range(30))
    assert logs.steps("r", "0", "maps") == list(range(30))


def test_drift_reports_which_filters_changed(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3))
    viz = ConvViz(tmp_path, probe=torch.randn(2, 1, 5, 5))
    viz.log(model, 0)
    with torch.no_grad():
        model[0].weight[2] *= -1  # filter 2 flips; the others stay
    viz.log(model, 1)
    viz.close()
    logs = load(tmp_path)
    drift = logs.filter_stats(logs.runs()[0], "0", 1)["cosine_distance_prev"]
    np.testing.assert_allclose(drift, [0, 0, 2, 0], atol=1e-5)


def test_defaults_keep_the_first_layers_kernels_every_log_and_the_rest_every_few(tmp_path):
    # 73,728 weights, then 147,456: only the first fits the every-log budget of 131,072 weights
    model = nn.Sequential(nn.Conv2d(64, 128, 3), nn.Conv2d(128, 128, 3))
    viz = ConvViz(tmp_path, probe=torch.randn(1, 64, 7, 7), kernels_every=3, perturbations=False)
    for epoch in range(7):
        viz.log(model, epoch)
    viz.log(model, 7, final=True)
    viz.close()
    logs = load(tmp_path)
    run = logs.runs()[0]
    assert logs.steps(run, "0", "kernels") == list(range(8))
    assert logs.steps(run, "1", "kernels") == [0, 3, 6, 7]
    assert logs.steps(run, "1") == list(range(8))


def test_every_n_epochs_and_layer_selection(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 1))
    viz = ConvViz(tmp_path, probe=torch.randn(1, 1, 7, 7), layers=lambda name, m: m.kernel_size == (3, 3), every_n_epochs=2)
    for epoch in range(5):
        viz.on_epoch_end(model, epoch)
    viz.close()
    logs = load(tmp_path)
    run = logs.runs()[0]
    assert logs.layers(run) == ["0", "1"]
    assert logs.steps(run, "0") == [0, 2, 4]


def test_shared_summary_writer_is_used_and_left_open(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path / "shared")
    viz = ConvViz(writer, probe=torch.randn(1, 1, 5, 5))
    viz.log(nn.Sequential(nn.Conv2d(1, 2, 3)), 0)
    viz.close()
    writer.add_scalar("loss", 1.0, 0)  # still usable by its owner
    writer.close()
    assert load(tmp_path).steps("shared", "0") == [0]


@pytest.mark.parametrize("logged_before_close", [0, 1])
def test_steps_written_after_a_shared_writer_closed_go_into_its_file(tmp_path, logged_before_close):
    """torch reopens a closed SummaryWriter when asked for its file, starting a new one: steps
    written after it closed (a Trainer closes its writer before convviz's analyses of a short run
    are written) must land in the file the writer wrote, and leave no second file beside it."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path / "shared")
    writer.add_scalar("loss", 1.0, 0)
    viz = ConvViz(writer, probe=torch.randn(1, 1, 5, 5), perturbations=False, background=False)
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    for step in range(logged_before_close):
        viz.log(model, step)
    writer.close()
    for step in range(logged_before_close, 2):
        viz.log(model, step)
    viz.close()
    assert len([p for p in (tmp_path / "shared").iterdir() if "tfevents" in p.name]) == 1  # and convviz's sidecar file
    assert load(tmp_path).steps("shared", "0") == [0, 1]


def test_perturbation_and_impact_records_read_back_per_filter(tmp_path):
    model = bn_cnn(classes=3)
    labels = torch.tensor([0, 1, 2, 0])
    viz = ConvViz(tmp_path, probe=(probe_images(size=8), labels), impact=True, counterfactuals={"darker": lambda b: b * 0.5})
    viz.log(model, 0)
    viz.close()
    logs = load(tmp_path)
    run = logs.runs()[0]
    orientation = logs.tuning(run, "0", 0, "orientation")
    assert orientation["tuning"].shape == (6, orientation["rotation_angles"].shape[0])
    assert logs.tuning(run, "4", 0, "noise")["stability"].shape[0] == 8
    darker = logs.tuning(run, "0", 0, "darker")
    assert set(darker) == {"change", "ci", "p", "q", "cosine", "z", "flag"}
    assert darker["ci"].shape == (6, 2) and darker["q"].shape == (6,)
    assert logs.tuning(run, "4", 0, "noise")["stability_ci"].shape == (8, 2)
    impact = logs.impact(run, "4", 0)
    assert impact["d_accuracy"].shape == (8,) and impact["d_recall"].shape == (8, 3)
    top = logs.top_examples(run, "4", 0)
    assert top["index"].shape[0] == 8 and np.all(top["index"] < 4)
    with pytest.raises(LookupError, match="logged:"):
        logs.tuning(run, "0", 0, "no-such-perturbation")


def test_impact_without_labels_fails_at_construction(tmp_path):
    with pytest.raises(ValueError, match="impact=True needs probe labels"):
        ConvViz(tmp_path, probe=probe_images(), impact=True)


def test_maps_are_the_conv_output_even_before_an_inplace_relu(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True))
    x = torch.randn(2, 1, 6, 6)
    viz = ConvViz(tmp_path, probe=x, perturbations=False, keep_all=True)
    viz.log(model, 0)
    viz.close()
    logs = load(tmp_path)
    want = model[0](x).detach().numpy()
    assert (want < 0).any()
    got = logs.activations(logs.runs()[0], "0", 0)
    assert np.abs(got - want).max() <= (want.max() - want.min()) / 510 * 2


def test_rotation_not_logged_is_not_found(tmp_path):
    from tb_convviz import NotFound

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with ConvViz(tmp_path / "run", probe=torch.randn(2, 3, 8, 8)) as viz:
        viz.log(model, 0)
    logs = load(tmp_path)
    assert "tuning" in logs.tuning("run", "0", 0, "orientation")
    with pytest.raises(NotFound, match="'rotation'.*logged: \\['adversarial', 'noise', 'orientation'\\]"):
        logs.tuning("run", "0", 0, "rotation")


def test_footprint_of_a_5x5_layer_used_as_a_3x3(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight[:, :, [0, 4], :] = 0
        model[0].weight[:, :, :, [0, 4]] = 0
    with ConvViz(tmp_path / "run", probe=torch.randn(2, 3, 8, 8), perturbations=False) as viz:
        viz.log(model, 0)
        viz.log(model, 1)
    logs = load(tmp_path)
    found = logs.footprint("run", "0", 1)
    assert "a 3×3 would keep 100% of this 5×5 layer's energy" in found["hint"]
    np.testing.assert_allclose(found["ring_energy"], [found["offset_energy"][2, 2], 1 - found["offset_energy"][2, 2], 0], atol=1e-6)
    assert found["step"] == 1 and found["dead_share"] == 0


def test_footprint_is_read_from_the_small_filters_record_and_older_logs_still_read(tmp_path, monkeypatch):
    """/layer shows the footprint of the last full kernels: it is kept in that step's filters record
    (tens of kB), so the kernels record (MBs for a wide layer) is not read for it; logs written
    before that kept it in the kernels record, and read the same."""
    from tb_convviz.schema import format as fmt
    from tb_convviz.schema import records
    from tb_convviz.write.writer import RecordWriter

    model = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with ConvViz(tmp_path / "new", probe=torch.randn(2, 3, 8, 8), perturbations=False) as viz:
        for step in range(3):
            viz.log(model, step)
    logs = load(tmp_path)
    decoded, real = [], logs._decode
    monkeypatch.setattr(logs, "_decode", lambda run, layer, kind, datum, data=None: decoded.append(kind) or real(run, layer, kind, datum, data))
    found = logs.footprint("new", "0", 1)
    assert found["step"] == 1 and decoded == [fmt.KIND_FILTERS]
    assert records.footprint(logs.bundle("new", "0", fmt.KIND_KERNELS, 1)) is None  # not stored twice

    # The same log in the older layout: the footprint in the kernels record, none in the filters record.
    writer = RecordWriter(tmp_path / "old")
    for step in range(3):
        for layer, kinds in logs.layer_kinds("new").items():
            for kind in kinds:
                if step not in logs.steps("new", layer, kind) or kind == fmt.KIND_COMMIT:
                    continue
                datum = next(d for d in logs._series("new", layer, kind) if d.step == step)
                payload = logs._record_bytes("new", datum)
                if kind in (fmt.KIND_FILTERS, fmt.KIND_KERNELS) and layer == "0" and step == 1:
                    bundle = logs.bundle("new", layer, kind, step)  # a kernels change resolved against its keyframe
                    if kind == fmt.KIND_FILTERS:
                        stats = {k: bundle.array(k) for k in bundle.names() if k != records.TILES and not k.startswith(records.FOOTPRINT_PREFIX)}
                        payload = records.filters_record(bundle.meta["info"], 0, 0, bundle.array(records.TILES), stats)
                    else:
                        arrays = {records.KERNEL: ("q8", bundle.array(records.KERNEL), 1)}
                        arrays.update({records.FOOTPRINT_PREFIX + k: ("f32", v, 0) for k, v in found.items() if k in records.FOOTPRINT_ARRAYS})
                        scalars = {k: v for k, v in found.items() if k not in (*records.FOOTPRINT_ARRAYS, "step")}
                        payload = fmt.encode_bundle(arrays, {"batchnorm": None, records.FOOTPRINT_META: scalars})
                writer.write(layer, kind, step, payload)
        writer.write(fmt.RUN_LAYER, fmt.KIND_COMMIT, step, records.commit_record(1, None))
    writer.close()
    old = load(tmp_path).footprint("old", "0", 1)
    assert old["step"] == 1 and old["hint"] == found["hint"]
    np.testing.assert_array_equal(old["ring_energy"], found["ring_energy"])


def test_per_filter_tables_export_as_csv(tmp_path):
    import csv

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with ConvViz(tmp_path / "run", probe=(torch.randn(6, 3, 8, 8), torch.tensor([0, 1] * 3)), impact=True) as viz:
        viz.log(model, 0)
    logs = load(tmp_path)
    text = logs.to_csv("run", "0", 0, path=str(tmp_path / "table.csv"))
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert (tmp_path / "table.csv").read_text() == text and len(rows) == 4
    impact = logs.impact("run", "0", 0)
    stats = logs.filter_stats("run", "0", 0)
    declared = logs.columns("run", "0", 0)
    # Each column, and right after it its interval's bounds where it has one (Δaccuracy, noise
    # stability, FGSM and PGD change).
    assert list(rows[0]) == ["filter", *[h for c in declared for h in ((c["name"], f"{c['name']}_lo", f"{c['name']}_hi") if c["ci"] else (c["name"],))]]
    assert {c["name"] for c in declared if c["ci"]} == {"d_accuracy", "stability", "fgsm", "pgd"}
    noise = logs.tuning("run", "0", 0, "noise")
    assert [float(r["stability_lo"]) for r in rows] == pytest.approx(noise["stability_ci"][:, 0].tolist())
    for f, row in enumerate(rows):
        assert int(row["filter"]) == f
        assert float(row["d_loss"]) == pytest.approx(float(impact["d_loss"][f]))
        assert float(row["d_accuracy_lo"]) == pytest.approx(float(impact["d_accuracy_ci"][f, 0]))
        assert float(row["d_accuracy_hi"]) == pytest.approx(float(impact["d_accuracy_ci"][f, 1]))
        assert int(row["flips"]) == impact["flips"][f]
        assert float(row["l2"]) == pytest.approx(float(stats["l2"][f]))
