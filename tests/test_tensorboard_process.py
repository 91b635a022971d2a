"""A real `tensorboard` process, both loaders, and the built wheel installed in a fresh venv."""
import os
import re
import site
import subprocess
import sys
import tarfile
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import tb_convviz
from tbserver import get_json, tensorboard, wait_for
from tb_convviz import ConvViz

REPO = Path(__file__).resolve().parents[1]
FRONTEND = REPO / "frontend"


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


def _frontend_files() -> set[str]:
    """Every dashboard file of the checkout, relative to frontend/."""
    return {p.relative_to(FRONTEND).as_posix() for p in FRONTEND.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and wheel `python -m build` makes of this checkout: the ones .ci/run built and
    installed (TB_CONVVIZ_DIST names their folder), else built here."""
    given = os.environ.get("TB_CONVVIZ_DIST")
    if given:
        return Path(given)
    pytest.importorskip("build", reason="python -m build needs the build package (the test extra has it)")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], check=True, capture_output=True)
    return out


def test_build_makes_an_sdist_and_a_wheel_carrying_every_frontend_file(dist):
    (wheel,) = dist.glob("tb_convviz-*.whl")
    (sdist,) = dist.glob("tb_convviz-*.tar.gz")
    assert wheel.name.startswith(f"tb_convviz-{tb_convviz.__version__}-") and sdist.name == f"tb_convviz-{tb_convviz.__version__}.tar.gz"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f"tb_convviz-{tb_convviz.__version__}.dist-info/METADATA").decode()
    shipped = {n[len("tb_convviz/frontend/"):] for n in names if n.startswith("tb_convviz/frontend/")}
    assert shipped == _frontend_files()
    assert {"tb_convviz/hf.py", "tb_convviz/lightning.py", "tb_convviz/_version.py"} <= set(names)
    assert f"Version: {tb_convviz.__version__}" in metadata.splitlines()
    assert {"Provides-Extra: hf", "Provides-Extra: lightning"} <= set(metadata.splitlines())
    with tarfile.open(sdist) as t:
        top = f"tb_convviz-{tb_convviz.__version__}/"
        in_sdist = {n[len(top):] for n in t.getnames()}
    assert {f"frontend/{f}" for f in _frontend_files()} | {"setup.py", "README.md", "tb_convviz/_version.py"} <= in_sdist


def test_the_wheel_in_a_fresh_venv_serves_the_tab_with_its_frontend(tmp_path, thirty_epochs, dist):
    (wheel,) = dist.glob("tb_convviz-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    # Dependencies (torch, tensorboard) come from this environment through a .pth file, so the test
    # does not download; tb_convviz itself is the wheel, installed ahead of them on the path (pip
    # would otherwise take this environment's tb_convviz of the same version for it).
    purelib = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    Path(purelib, "outer_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)], check=True, cwd=tmp_path)
    where = subprocess.check_output([python, "-c", "import tb_convviz, os; print(os.path.dirname(tb_convviz.__file__))"], text=True, cwd=tmp_path).strip()
    assert Path(where).is_relative_to(env_dir), where  # the installed copy, not the checkout
    installed = Path(where) / "frontend"
    assert {p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.is_file()} == _frontend_files()
    with tensorboard(thirty_epochs, python=python) as base:
        assert "convviz" in get_json(base + "/data/plugins_listing")
        entry = wait_for(lambda: _steps_seen(base))
        assert entry and len(entry[0]) == 30
        assert get_json(base + "/data/plugin/convviz/index")["version"] == tb_convviz.__version__
        for served, name in (("index.js", "index.js"), ("static/views/version.js", "views/version.js"), ("static/convviz.css", "convviz.css")):
            with urllib.request.urlopen(f"{base}/data/plugin/convviz/{served}", timeout=10) as answer:
                assert answer.read() == (FRONTEND / name).read_bytes()
