"""Feature visualization with planted answers: hand-set filters whose preferred input is known."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.plugins import base_plugin
from torch import nn
from werkzeug.test import Client

from models import bn_cnn
from tb_convviz import ConvViz, load
from tb_convviz.analysis.feature_vis import feature_visualization
from tb_convviz.model.layers import following_activation, following_batchnorm
from tb_convviz.plugin.plugin import ConvVizPlugin
from tb_convviz.write.visualize import FeatureVisSettings, calibrated, chosen_filters, visit_turns
from wire import decode_wire

SIZE = 32


def gabor(theta_deg: float, size: int = 9, wavelength: float = 4.0, sigma: float = 2.5) -> torch.Tensor:
    """A cosine Gabor whose wave vector points at theta, counter-clockwise from the column axis
    (array rows grow downwards, so the angle is measured with y = −row)."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    x, y = cols, -rows
    t = math.radians(theta_deg)
    along = x * math.cos(t) + y * math.sin(t)
    return (torch.exp(-(x * x + y * y) / (2 * sigma**2)) * torch.cos(2 * math.pi * along / wavelength)).float()


def dominant_orientation(image: np.ndarray) -> float:
    """Angle (degrees, mod 180) of the strongest non-DC wave vector of a (H, W) image, in the
    convention of `gabor`."""
    spectrum = np.abs(np.fft.fft2(image - image.mean()))
    spectrum[0, 0] = 0
    row, col = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    fy = np.fft.fftfreq(image.shape[0])[row]
    fx = np.fft.fftfreq(image.shape[1])[col]
    return math.degrees(math.atan2(-fy, fx)) % 180


def angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


def gabor_net(theta: float) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 2, 9, padding=4), nn.ReLU())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
        net[0].weight[0, 0] = gabor(theta)
        net[0].weight[1, 0] = gabor(theta + 90)
    return net.eval()


def probe_1ch(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_gabor_filter_image_has_its_orientation():
    for theta in (30.0, 120.0):
        net = gabor_net(theta)
        out = feature_visualization(net, {"0": net[0]}, probe_1ch(), {"0": [0, 1]}, {"0": net[1]}, steps=96)
        images = out["0"]["images"]
        assert images.shape == (2, 1, SIZE, SIZE)
        found = dominant_orientation(images[0, 0])
        assert angle_gap(found, theta) <= 10, (theta, found)
        assert angle_gap(dominant_orientation(images[1, 0]), theta + 90) <= 10
        # The optimisation beats every probe image, and reports what it reached.
        assert np.all(out["0"]["objective"] > out["0"]["probe_best"])
        direct = net(torch.from_numpy(images)).mean((2, 3))
        assert np.allclose(direct.diagonal().detach().numpy(), out["0"]["objective"], rtol=1e-4)


def test_the_objective_reported_is_the_mean_activation_after_a_per_channel_nonlinearity():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.PReLU(4, init=0.3)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    out = feature_visualization(net, {"0": net[0]}, torch.rand(4, 3, 10, 10), {"0": [3, 1]}, {"0": net[1]}, steps=6)["0"]
    with torch.no_grad():
        direct = net(torch.from_numpy(out["images"]))[[0, 1], [3, 1]].mean((1, 2)).numpy()
    assert direct == pytest.approx(out["objective"], rel=1e-5)


class CornerColourNet(nn.Module):
    """conv1: identity on the colours (+ReLU); conv2: one filter over the whole 32×32 image whose
    only nonzero weights, in the top-left 10×10 patch, read +R −G −B: it fires on red there."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 2, SIZE)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.eye(3)[:, :, None, None])
            self.conv1.bias.zero_()
            self.conv2.weight.zero_()
            self.conv2.bias.zero_()
            self.conv2.weight[0, :, :10, :10] = torch.tensor([1.0, -1.0, -1.0])[:, None, None] / 100
            self.conv2.weight[1, :, -10:, -10:] = torch.tensor([-1.0, 1.0, -1.0])[:, None, None] / 100

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


def test_deeper_filter_wired_to_a_colour_in_a_corner_paints_that_corner():
    net = CornerColourNet().eval()
    probe = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    out = feature_visualization(net, {"conv2": net.conv2}, probe, {"conv2": [0, 1]}, steps=96)
    images = out["conv2"]["images"]  # in the probe's range, here [0, 1]
    red = images[0, :, 2:8, 2:8].mean((1, 2))
    assert red[0] > 0.75 and red[1] < 0.25 and red[2] < 0.25, red
    green = images[1, :, -8:-2, -8:-2].mean((1, 2))
    assert green[1] > 0.75 and green[0] < 0.25 and green[2] < 0.25, green


def test_same_weights_and_seed_give_the_same_image_and_another_seed_another():
    net = gabor_net(30.0)
    args = (net, {"0": net[0]}, probe_1ch(), {"0": [0]}, {"0": net[1]})
    a = feature_visualization(*args, steps=20, seed=3)["0"]["images"]
    b = feature_visualization(*args, steps=20, seed=3)["0"]["images"]
    c = feature_visualization(*args, steps=20, seed=4)["0"]["images"]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_a_filter_image_does_not_depend_on_its_batch_companions():
    net = gabor_net(30.0)
    alone = feature_visualization(net, {"0": net[0]}, probe_1ch(), {"0": [1]}, {"0": net[1]}, steps=20)["0"]["images"][0]
    both = feature_visualization(net, {"0": net[0]}, probe_1ch(), {"0": [0, 1]}, {"0": net[1]}, steps=20)["0"]["images"][1]
    assert np.allclose(alone, both, atol=1e-5)


def test_conv1d_and_conv3d_give_a_sequence_and_a_clip():
    seq = nn.Sequential(nn.Conv1d(2, 4, 5, padding=2), nn.ReLU())
    out = feature_visualization(seq, {"0": seq[0]}, torch.randn(4, 2, 40), {"0": [0, 3]}, steps=32)
    assert out["0"]["images"].shape == (2, 2, 40)
    assert np.all(out["0"]["objective"] > out["0"]["probe_best"])
    clip = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.GELU())
    out = feature_visualization(clip, {"0": clip[0]}, torch.rand(2, 3, 4, 12, 12), {"0": [1]}, {"0": clip[1]}, steps=32)
    assert out["0"]["images"].shape == (1, 3, 4, 12, 12)
    assert np.all(out["0"]["objective"] > out["0"]["probe_best"])


# -- through ConvViz, the event file and load() -------------------------------------------------


BASE = "/data/plugin/convviz"


def probe_images(n: int = 6, size: int = 12) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(2))


def test_the_objective_reads_a_conv_after_its_batchnorm_and_relu():
    net = bn_cnn()
    convs = {"0": net[0], "4": net[4]}
    bn = following_batchnorm(net, convs)
    assert bn == {"0": "1", "4": "5"}
    assert following_activation(net, convs, bn) == {"0": "2", "4": "6"}
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))
    assert following_activation(plain, {"0": plain[0], "2": plain[2]}, {}) == {}

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.gelu(self.conv(x))

    f = Functional()
    assert following_activation(f, {"conv": f.conv}, {}) == {"conv": "torch.gelu"}


@pytest.fixture(scope="module")
def two_logs(tmp_path_factory):
    """Two logs of a BatchNorm CNN, filters 0 and 1 of its last conv visualised at each; between
    them filter 1's weights change and filter 0's do not. Returns (logdir, probe, the model at the second log)."""
    d = tmp_path_factory.mktemp("fv")
    net = bn_cnn()
    x = probe_images()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning from the analysis
        with ConvViz(str(d), probe=x, perturbations=False, similarity_images=0,
                     feature_vis={"filters": {"4": [0, 1]}, "steps": 24}) as viz:
            viz.log(net, 0)
            viz.flush()
            with torch.no_grad():
                net[4].weight[1] += torch.randn(net[4].weight[1].shape, generator=torch.Generator().manual_seed(5))
            viz.log(net, 1)
    return d, x, net


def test_a_filter_that_changes_between_logs_changes_its_image_and_one_that_does_not_does_not(two_logs):
    d, x, net = two_logs
    logs = load(str(d))
    (run,) = logs.runs()
    a, b = logs.feature_vis(run, "4", 0), logs.feature_vis(run, "4", 1)
    assert list(a["filters"]) == [0, 1] and a["step"] == 0 and b["step"] == 1
    assert a["images"].shape == (2, 3, 12, 12)
    assert np.array_equal(a["images"][0], b["images"][0])  # filter 0 did not change: nor did its image
    assert np.abs(a["images"][1] - b["images"][1]).max() > 0.05  # filter 1 did
    # The images are in the probe's range (the model's input space) and reach the recorded objective.
    assert a["images"].min() >= float(x.min()) - 1e-2 and a["images"].max() <= float(x.max()) + 1e-2
    assert a["range"]["lo"] == pytest.approx(x.amin((0, 2, 3)).tolist())
    with torch.no_grad():
        net.eval()  # the analysis reads the model in eval mode (BatchNorm's running statistics)
        act = net[6](net[5](net[4](net[2](net[1](net[0](torch.from_numpy(b["images"]).float()))))))
    reached = act[[0, 1], [0, 1]].mean((1, 2)).numpy()
    assert reached == pytest.approx(b["objective"], rel=0.05, abs=1e-3)  # within the 8-bit images' tolerance
    assert np.all(b["probe_best"] >= 0)
    # The last record at or before a step; the filmstrip of a filter over the logs.
    assert logs.feature_vis(run, "4", 7)["step"] == 1
    strip = logs.feature_vis_history(run, "4", 1)
    assert [s["step"] for s in strip] == [0, 1] and strip[1]["image"].shape == (3, 12, 12)
    assert logs.feature_vis_history(run, "4", 5) == []
    assert logs.cost(run, 1)["parts"]["feature_vis"]["wall_s"] > 0


def test_routes_send_the_layer_images_and_a_filters_filmstrip(two_logs):
    d, _, _ = two_logs
    logs = load(str(d))
    client = Client(TensorBoardWSGI([ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=str(d)))]))
    answer = client.get(f"{BASE}/feature_vis?run=.&layer=4&step=1").get_json()
    assert answer["record_step"] == 1 and answer["filters"] == [0, 1]
    np.testing.assert_allclose(decode_wire(answer["images"]), logs.feature_vis(".", "4", 1)["images"], atol=1e-6)
    assert answer["objective"] == pytest.approx(logs.feature_vis(".", "4", 1)["objective"].tolist())
    strip = client.get(f"{BASE}/feature_vis_history?run=.&layer=4&filter=1").get_json()
    assert strip["steps"] == [0, 1]
    images = decode_wire(strip["images"])
    assert images.shape == (2, 3, 12, 12)
    np.testing.assert_allclose(images[0], logs.feature_vis(".", "4", 0)["images"][1], atol=1e-6)
    never = client.get(f"{BASE}/feature_vis_history?run=.&layer=4&filter=7").get_json()
    assert never["steps"] == [] and never["images"] is None
    # Bad parameters: 4xx with a message, never a 500.
    for query, code in (("layer=0&step=1", 404), ("layer=4&step=x", 400), ("layer=4&step=5", 404)):
        got = client.get(f"{BASE}/feature_vis?run=.&{query}")
        assert got.status_code == code and "error" in got.get_json()
    assert client.get(f"{BASE}/feature_vis_history?run=.&layer=4&filter=99").status_code == 400


def test_the_default_budget_spends_rounds_over_a_turn_of_layers_most_important_filters_first():
    vis = FeatureVisSettings(budget=10.0)
    counts = {"a": 6, "b": 4, "c": 8}
    costs = {"a": 1.0, "b": 3.0, "c": 9.0}
    # Two filters of each cost 26 in all: three turns (`turns.layer_turns`), heaviest first.
    assert visit_turns(vis, costs) == [["c"], ["b"], ["a"]]
    scores = {"a": np.array([0.1, 0.9, 0.5, 0.0, 0.3, 0.2]), "b": np.array([0.0, 1.0, 2.0, 3.0])}
    # Rounds: a then b (4), a then b (8), a (9), a (10): a's four best and b's two best.
    assert chosen_filters(vis, counts, ["a", "b"], costs, scores) == {"a": [1, 2, 4, 5], "b": [2, 3]}
    assert chosen_filters(vis, counts, ["c"], {"c": 11.0}, {}) == {}  # a filter over the whole budget never runs
    assert chosen_filters(FeatureVisSettings(filters="all"), counts, ["c"], costs, {}) == {k: list(range(n)) for k, n in counts.items()}
    # What a log measured moves the next estimates halfway (geometrically), within bounds; a log
    # that measured nothing moves them halfway back to the first estimate.
    assert calibrated(measured_fe=16.0, estimated_fe=10.0, previous=1.0) == pytest.approx(1.6 ** 0.5)
    assert calibrated(measured_fe=90.0, estimated_fe=10.0, previous=1.0) == 2.0  # bounded
    assert calibrated(measured_fe=1.0, estimated_fe=10.0, previous=1.0) == 0.5
    assert calibrated(measured_fe=0.0, estimated_fe=0.0, previous=1.96) == pytest.approx(1.4)


def test_logged_with_the_default_budget_layers_take_turns_and_the_cost_is_counted(tmp_path):
    net = bn_cnn()
    with ConvViz(str(tmp_path), probe=probe_images(), perturbations=False, background=False,
                 feature_vis={"budget": 28.0, "steps": 16}) as viz:
        for step in range(2):
            viz.log(net, step)
    logs = load(str(tmp_path))
    (run,) = logs.runs()
    # Estimated, 16 steps × 6 passes of one image / 6 probe images: 16 forward-equivalents a filter
    # of the last conv, 27% of that (4.35) for the first, its share of the FLOPs. Two filters of each
    # do not fit 28 together: the layers take turns, the costlier first. The second log's estimates
    # carry what the first measured (at most 2×: 8.7 for a filter of the first conv, which fits).
    assert logs.steps(run, "4", "feature_vis") == [0] and logs.steps(run, "0", "feature_vis") == [1]
    assert len(logs.feature_vis(run, "4", 0)["filters"]) == 1  # a second would make 32
    assert logs.feature_vis(run, "4", 1)["step"] == 0  # the last record at or before
    assert logs.cost(run, 0)["parts"]["feature_vis"]["forward_equivalents"] is not None


@pytest.mark.parametrize("value, message", [
    ("some", "feature_vis must be"),
    ({"steps": 0}, "feature_vis: steps"),
    ({"filterz": "all"}, "unknown options"),
    ({"filters": {"0": [-1]}}, "filters['0']"),
    ({"size": 2}, "size"),
])
def test_bad_feature_vis_arguments_fail_at_construction_naming_it(tmp_path, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ConvViz(str(tmp_path), probe=probe_images(), feature_vis=value)


def test_a_listed_layer_or_filter_that_does_not_exist_fails_at_the_first_log(tmp_path):
    for filters, message in (({"nope": [0]}, "not a logged conv layer"), ({"0": [99]}, "has 6 filters")):
        viz = ConvViz(str(tmp_path), probe=probe_images(), perturbations=False, feature_vis={"filters": filters})
        with pytest.raises(ValueError, match=message):
            viz.log(bn_cnn(), 0)
        viz.close()
