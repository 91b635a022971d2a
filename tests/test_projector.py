"""Export to TensorBoard's PROJECTOR tab: logs from the real callback, the export through the
real command line, and a real TensorBoard process serving the exported tensor, metadata and sprite."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from models import two_conv_net
from tb_convviz import load
from tb_convviz.cli.command import main
from tb_convviz.cli.projector import export_projector, png_bytes, sprite_sheet, tile_images
from tbserver import get_json, tensorboard, wait_for
from training import one_thread, train_and_log

@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run "run": a two-conv net ("0": 3→4, "3": 4→6 filters) logged at steps 0, 1, 2."""
    root = tmp_path_factory.mktemp("projector") / "logs"
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    probe = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with one_thread():
        model = two_conv_net((4, 6), 3)
        train_and_log(root / "run", model, probe, lambda: [(x, y)], [0, 1, 2], lr=0.3, perturbations=False)
    return root


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m tb_convviz ARGS` with this interpreter and environment: the package under test."""
    return subprocess.run([sys.executable, "-m", "tb_convviz", *args], capture_output=True, text=True, timeout=120)


def fetch(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), response.headers.get("Content-Type", "")


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB, unfiltered PNG (what png_bytes writes) → (H, W, 3), checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * 3)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


def test_cli_export_is_served_by_a_real_tensorboard_projector(logdir: Path):
    for layer in ("3", "0"):
        done = cli("export-projector", str(logdir), "--run", "run", "--layer", layer, "--step", "2")
        assert done.returncode == 0, done.stderr
        assert "projector_config.pbtxt" in done.stdout
    logs = load(str(logdir))
    kernels = logs.kernels("run", "3", 2)
    with tensorboard(logdir) as base:
        api = base + "/data/plugin/projector"
        assert wait_for(lambda: get_json(api + "/runs") == ["run"]), get_json(api + "/runs")
        config = get_json(api + "/info?run=run")
        by_name = {e["tensorName"]: e for e in config["embeddings"]}
        assert set(by_name) == {"3 kernels @ step 2", "0 kernels @ step 2"}
        embedding = by_name["3 kernels @ step 2"]
        assert [int(n) for n in embedding["tensorShape"]] == [6, 4 * 3 * 3]
        assert embedding["sprite"]["singleImageDim"] == [30, 30]  # 3×3 tiles scaled ×10

        query = "?" + urllib.parse.urlencode({"run": "run", "name": "3 kernels @ step 2"})
        data, _ = fetch(api + "/tensor" + query)
        served = np.frombuffer(data, np.float32).reshape(6, 36)
        np.testing.assert_allclose(served, kernels.reshape(6, -1), rtol=1e-6, atol=1e-7)

        metadata, _ = fetch(api + "/metadata" + query)
        lines = metadata.decode().splitlines()
        header = lines[0].split("\t")
        assert header[0] == "filter" and {"l2", "mean_abs", "dead", "cosine_distance_prev"} <= set(header)
        assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(6)]
        l2 = np.array([float(line.split("\t")[header.index("l2")]) for line in lines[1:]])
        np.testing.assert_allclose(l2, logs.filter_stats("run", "3", 2)["l2"], rtol=1e-5)

        sprite, content_type = fetch(api + "/sprite_image" + query)
        assert content_type == "image/png"
        assert decode_png(sprite).shape == (90, 90, 3)  # ⌈√6⌉ = 3 cells of 30 px per side


def test_export_uses_the_latest_kernels_at_or_before_the_step_and_replaces_its_own_entry(logdir: Path):
    export_projector(logdir, "run", "0", 99)
    config, step = export_projector(logdir, "run", "0", 99)
    assert step == 2
    assets = logdir.resolve() / "run" / "plugins" / "org_tensorflow_tensorboard_projector"
    assert config == assets / "projector_config.pbtxt"
    text = config.read_text()
    assert text.count('tensor_name: "0 kernels @ step 2"') == 1
    rows = np.loadtxt(config.parent / "0_kernels_step2" / "tensor.tsv", delimiter="\t")
    np.testing.assert_allclose(rows, load(str(logdir)).kernels("run", "0", 2).reshape(4, -1), rtol=1e-6, atol=1e-7)


def test_cli_error_is_one_line_on_stderr_and_exit_status_2(logdir: Path):
    done = cli("export-projector", str(logdir), "--run", "nope", "--layer", "0", "--step", "1")
    assert done.returncode == 2
    assert done.stderr.startswith("tb-convviz export-projector: error: no convviz run 'nope'")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--run", "run", "--layer", "9", "--step", "1"], "no layer '9'; layers: ['0', '3']"),
        (["--run", "run", "--layer", "0", "--step", "-1"], "at or before step -1"),
        (["--run", "run", "--layer", "0", "--step", "1", "--out", "{outside}"], "outside the logdir"),
    ],
)
def test_cli_names_what_is_missing_or_refused(logdir: Path, capsys: pytest.CaptureFixture, args: list[str], says: str):
    outside = logdir.parent / "elsewhere"
    assert main(["export-projector", str(logdir), *[a.format(outside=outside) for a in args]]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not outside.exists()  # nothing is ever written outside the logdir


def test_tiles_are_drawn_in_the_grids_colours_with_zero_neutral():
    tile = np.zeros((2, 1, 3, 3))
    tile[0, 0, 0, 0], tile[0, 0, 2, 2] = 2.0, -1.2  # each filter is scaled by its own max |w|
    img = tile_images(tile)
    assert img.shape == (2, 3, 3, 3) and img.dtype == np.uint8
    assert img[0, 0, 0].tolist() == [103, 0, 31]  # +max: the darkest red
    assert img[0, 1, 1].tolist() == [247, 247, 247]  # 0: white
    assert img[0, 2, 2].tolist() == [67, 147, 195]  # −0.6 max: the third of eleven stops
    assert (img[1] == 247).all()  # an all-zero filter is blank, not NaN

    rgb = np.zeros((1, 3, 2, 2))
    rgb[0, 0, 0, 0], rgb[0, 2, 1, 1] = 1.0, -1.0
    img = tile_images(rgb)
    assert img[0, 0, 0].tolist() == [255, 128, 128] and img[0, 1, 1].tolist() == [128, 128, 0]


def test_1d_kernels_are_rows_and_3d_kernels_are_depth_slices_left_to_right():
    strips = tile_images(np.arange(2 * 2 * 5, dtype=float).reshape(2, 2, 5) - 5)
    assert strips.shape == (2, 2, 5, 3)  # one row per input channel
    volume = np.zeros((1, 1, 2, 3, 3))
    volume[0, 0, 1, 0, 0] = 1.0  # depth 1, top-left
    img = tile_images(volume)
    assert img.shape == (1, 3, 6, 3)
    assert img[0, 0, 3].tolist() == [103, 0, 31] and img[0, 0, 0].tolist() == [247, 247, 247]


def test_sprite_sheet_places_each_filter_in_its_cell_and_png_round_trips():
    tiles = tile_images(np.random.default_rng(0).normal(size=(5, 1, 3, 3)))
    sprite = sprite_sheet(tiles)
    assert sprite is not None
    sheet, cell = sprite
    assert cell == (30, 30) and sheet.shape == (90, 90, 3)
    # Filter 4 is row 1, column 1; a 3×3 tile scaled ×10 fills its cell.
    np.testing.assert_array_equal(sheet[30:60, 30:60], tiles[4].repeat(10, axis=0).repeat(10, axis=1))
    assert (sheet[60:, 60:] == 255).all()  # the unused ninth cell stays white
    np.testing.assert_array_equal(decode_png(png_bytes(sheet)), sheet)


def test_png_reads_back_with_pillow():
    image_module = pytest.importorskip("PIL.Image")
    import io

    sheet = np.random.default_rng(1).integers(0, 256, size=(7, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(image_module.open(io.BytesIO(png_bytes(sheet))).convert("RGB")), sheet)


def test_cli_says_which_step_it_exported_when_it_is_not_the_one_asked_for(logdir: Path, capsys: pytest.CaptureFixture):
    assert main(["export-projector", str(logdir), "--run", "run", "--layer", "0", "--step", "30"]) == 0
    assert "exported step 2" in capsys.readouterr().out
    assert main(["export-projector", str(logdir), "--run", "run", "--layer", "0", "--step", "2"]) == 0
    assert "exported step" not in capsys.readouterr().out


def test_out_is_relative_to_the_logdir_not_the_working_directory(logdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export-projector", str(logdir), "--run", "run", "--layer", "0", "--step", "2", "--out", "run/proj"]) == 0
    assert (logdir / "run" / "proj" / "projector_config.pbtxt").is_file()
    assert not (tmp_path / "run").exists()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


@pytest.fixture()
def copied_logdir(logdir: Path, tmp_path: Path) -> Path:
    """A copy of the logs, for tests that plant links and files in it."""
    return Path(shutil.copytree(logdir, tmp_path / "logs"))


def _refused(root: Path, capsys: pytest.CaptureFixture) -> str:
    assert main(["export-projector", str(root), "--run", "run", "--layer", "0", "--step", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_symlinked_export_folder_is_refused_and_nothing_is_written_through_it(copied_logdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    outside = tmp_path / "outside"
    outside.mkdir()
    assets = copied_logdir / "run" / "plugins" / "org_tensorflow_tensorboard_projector"
    _remove(assets)
    assets.mkdir(parents=True)
    (assets / "0_kernels_step2").symlink_to(outside, target_is_directory=True)
    assert "is a symbolic link" in _refused(copied_logdir, capsys)
    assert list(outside.iterdir()) == []


def test_a_symlinked_config_is_refused_and_its_target_kept(copied_logdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    assets = copied_logdir / "run" / "plugins" / "org_tensorflow_tensorboard_projector"
    _remove(assets)
    assets.mkdir(parents=True)
    (assets / "projector_config.pbtxt").symlink_to(target)
    assert "is a symbolic link" in _refused(copied_logdir, capsys)
    assert target.read_text() == "keep me"


def test_a_symlinked_plugins_folder_is_refused(copied_logdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    outside = tmp_path / "outside"
    outside.mkdir()
    _remove(copied_logdir / "run" / "plugins")
    (copied_logdir / "run" / "plugins").symlink_to(outside, target_is_directory=True)
    assert "is a symbolic link" in _refused(copied_logdir, capsys)
    assert list(outside.iterdir()) == []


def test_an_unreadable_config_is_one_line_and_exit_status_2(copied_logdir: Path, capsys: pytest.CaptureFixture):
    assets = copied_logdir / "run" / "plugins" / "org_tensorflow_tensorboard_projector"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "projector_config.pbtxt").write_text("embeddings { this is not a config")
    assert "is not one TensorBoard reads" in _refused(copied_logdir, capsys)
    assert (assets / "projector_config.pbtxt").read_text() == "embeddings { this is not a config"  # left for the user
