"""A real `tensorboard` process, both loaders, and a fresh non-editable install."""
import re
import site
import subprocess
import venv
from pathlib import Path

import pytest
import torch
from torch import nn

from tbserver import get_json, tensorboard, wait_for
from tb_convviz import ConvViz

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def thirty_epochs(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("tb") / "logs"
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    viz = ConvViz(logdir / "run", probe=torch.randn(2, 1, 8, 8))
    for epoch in range(30):
        viz.log(model, epoch)
    viz.close()
    return logdir


def _steps_seen(base: str) -> list[list[int]]:
    index = get_json(base + "/data/plugin/convviz/index")
    return [layer["steps"] for run in index["runs"] for layer in run["layers"]]


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_every_logged_epoch_is_served_without_any_flag(thirty_epochs, load_fast):
    with tensorboard(thirty_epochs, args=[f"--load_fast={load_fast}"]) as base:
        steps = wait_for(lambda: (s := _steps_seen(base)) and all(len(x) == 30 for x in s) and s)
        assert steps == [list(range(30))] * 2


def test_user_samples_flag_still_wins(thirty_epochs):
    with tensorboard(thirty_epochs, args=["--load_fast=false", "--samples_per_plugin=convviz=5"]) as base:
        steps = wait_for(lambda: _steps_seen(base))
        assert [len(s) for s in steps] == [5, 5]


def test_every_package_folder_ships_in_the_wheel():
    """setup.py names its packages one by one: a subpackage missing there imports from a checkout
    but not from the installed wheel that CI tests."""
    listed = set(re.findall(r'"(tb_convviz[\w.]*)"', (REPO / "setup.py").read_text()))
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "tb_convviz").rglob("__init__.py")}
    assert found and found <= listed, sorted(found - listed)


def test_fresh_venv_with_pip_install_lists_the_plugin(tmp_path, thirty_epochs):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    # Dependencies (torch, tensorboard) come from this environment through a .pth file, so the test
    # does not download; tb_convviz itself is built and installed as a regular (non-editable) wheel.
    purelib = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    Path(purelib, "outer_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", str(REPO)],
        check=True,
        cwd=tmp_path,
    )
    where = subprocess.check_output([python, "-c", "import tb_convviz, os; print(os.path.dirname(tb_convviz.__file__))"], text=True, cwd=tmp_path).strip()
    assert Path(where).is_relative_to(env_dir), where  # the installed copy, not the checkout
    assert (Path(where) / "frontend" / "index.js").is_file()  # the dashboard ships inside the wheel
    with tensorboard(thirty_epochs, python=python) as base:
        assert "convviz" in get_json(base + "/data/plugins_listing")
        entry = wait_for(lambda: _steps_seen(base))
        assert entry and len(entry[0]) == 30
