"""The README's pattern, ConvViz sharing the user's SummaryWriter: under both of TensorBoard's
loaders the user's scalars and the CONVVIZ records advance together while training runs.
TensorBoard's Python loader follows one event file per folder, so convviz writes into the
SummaryWriter's own file rather than one of its own beside it."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.error
from pathlib import Path

import pytest

from tbserver import get_json, tensorboard, wait_for

EPOCHS = 12

JOB = textwrap.dedent(
    f"""
    import sys, time
    import torch
    from torch import nn
    from torch.utils.tensorboard import SummaryWriter
    from tb_convviz import ConvViz

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    writer = SummaryWriter(sys.argv[1])
    viz = ConvViz(writer, probe=torch.randn(4, 3, 10, 10), perturbations=False)
    for epoch in range({EPOCHS}):
        with torch.no_grad():
            model[0].weight.add_(0.01)
        writer.add_scalar("loss", 1.0 / (epoch + 1), epoch)
        viz.log(model, epoch)
        time.sleep(0.5)
    viz.flush()
    print("TRAINED", flush=True)
    sys.stdin.readline()  # still running, writers open, until the test has looked
    viz.close()
    writer.close()
    """
)


def _convviz_steps(base: str) -> list[int]:
    index = get_json(base + "/data/plugin/convviz/index")
    return [step for run in index["runs"] for layer in run["layers"][:1] for step in layer["steps"]]


def _scalar_steps(base: str) -> list[int]:
    try:
        return [int(step) for _, step, _ in get_json(base + "/data/plugin/scalars/scalars?run=exp&tag=loss")]
    except urllib.error.HTTPError:
        return []


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_the_users_scalars_and_convviz_both_advance_live_in_a_shared_run_folder(tmp_path: Path, load_fast: str):
    logdir = tmp_path / "runs"
    job = subprocess.Popen([sys.executable, "-c", JOB, str(logdir / "exp")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with tensorboard(logdir, args=[f"--load_fast={load_fast}", "--reload_interval=1"]) as base:
            # while training runs: both move past their first steps
            assert wait_for(lambda: len(_scalar_steps(base)) >= 3 and len(_convviz_steps(base)) >= 3, timeout=90), (
                _scalar_steps(base), _convviz_steps(base))
            assert job.poll() is None
            assert job.stdout.readline().strip() == "TRAINED"
            last = list(range(EPOCHS))
            assert wait_for(lambda: _scalar_steps(base) == last and _convviz_steps(base) == last, timeout=60), (
                _scalar_steps(base), _convviz_steps(base))
            assert job.poll() is None  # the writers are still open: this is the live view
        assert [p.name for p in (logdir / "exp").iterdir() if "tfevents" in p.name and p.name.endswith(".convviz")] == []
    finally:
        job.stdin.close()
        job.wait(timeout=60)
    assert job.returncode == 0
