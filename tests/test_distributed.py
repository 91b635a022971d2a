"""ConvViz in a real 2-process DistributedDataParallel job on CPU (gloo): the ranks share the exact
ablation, rank 0 alone writes, and the result equals one process logging the same weights."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddp_job import EPOCHS, probe
from models import two_conv_net
from tb_convviz import ConvViz, load
from tb_convviz.schema import format as fmt
from tbserver import free_port
from user_metrics import HOYER

JOB = Path(__file__).parent / "ddp_job.py"


# Seen once in about ten runs on a loaded 2-core machine, in the job whose rank 1 fails its share: that
# rank's process aborted in C++ (gloo) with this message. Not understood yet (see the session notes);
# the job is run once more when it is exactly this, so that any other failure still fails the test.
NATIVE_ABORT = "terminate called without an active exception"


def run_job(tmp_path: Path, fail_rank: int = -1) -> tuple[Path, Path]:
    attempt = 0
    while True:
        logdir, outdir = tmp_path / f"ddp{attempt}", tmp_path / f"out{attempt}"
        outdir.mkdir()
        done = subprocess.run([sys.executable, str(JOB), str(logdir), str(outdir), "--port", str(free_port()),
                               "--fail-rank", str(fail_rank)], capture_output=True, text=True, timeout=400)
        if done.returncode == 0:
            return logdir, outdir
        if attempt or NATIVE_ABORT not in done.stderr:
            raise AssertionError(f"the DDP job failed ({done.returncode}):\n{done.stderr[-4000:]}")
        attempt += 1


def single_process_logs(tmp_path: Path, outdir: Path):
    """One process logging the weights rank 0 logged, with the same options."""
    model = two_conv_net((6, 8), classes=3)
    with ConvViz(tmp_path / "single", probe=probe(), impact=True, counterfactuals={"dim": lambda b: 0.5 * b}, background=False,
                 metrics=[HOYER]) as viz:
        for epoch in range(EPOCHS):
            model.load_state_dict(torch.load(outdir / f"weights{epoch}.pt"))
            viz.log(model, epoch)
    return load(tmp_path / "single")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    logdir, outdir = run_job(tmp)
    return load(logdir), logdir, outdir, single_process_logs(tmp, outdir)


def test_rank_zero_alone_writes_one_event_file(ddp_run):
    _, logdir, _, _ = ddp_run
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1


def test_sharded_impact_perturbations_and_user_metrics_equal_one_process(ddp_run):
    logs, _, _, single = ddp_run
    run = logs.runs()[0]
    for layer in ("0", "3"):
        for kind in (fmt.KIND_IMPACT, fmt.KIND_PERTURBATION, fmt.KIND_METRICS):
            assert logs.steps(run, layer, kind) == list(range(EPOCHS))
            for step in range(EPOCHS):
                a, b = logs.bundle(run, layer, kind, step), single.bundle(".", layer, kind, step)
                for name in b.names():
                    np.testing.assert_allclose(a.array(name), b.array(name), rtol=1e-5, atol=1e-5, err_msg=f"{layer}/{kind}/{name}")


def test_each_rank_ablated_part_of_every_layer(ddp_run):
    logs, _, _, _ = ddp_run
    run = logs.runs()[0]
    for layer in ("0", "3"):
        by_rank = logs.impact(run, layer, EPOCHS - 1)["ablated_by_rank"]
        assert by_rank.tolist() == [3, 3] if layer == "0" else by_rank.tolist() == [4, 4]


def test_the_trainings_own_all_reduce_kept_the_ranks_in_step(ddp_run):
    _, _, outdir, _ = ddp_run
    a, b = torch.load(outdir / "final0.pt"), torch.load(outdir / "final1.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_rank_failing_its_share_makes_rank_zero_warn_and_write_what_it_has(tmp_path):
    logdir, outdir = run_job(tmp_path, fail_rank=1)
    warned = json.loads((outdir / "warnings0.json").read_text())
    assert any("rank 1 failed its share of the impact analysis" in w and "cannot ablate" in w for w in warned)
    logs = load(logdir)
    run = logs.runs()[0]
    impact = logs.impact(run, "3", EPOCHS - 1)
    assert logs.steps(run, "3", fmt.KIND_IMPACT) == list(range(EPOCHS))  # training and logging went on
    assert impact["exact"].sum() == 4 and impact["ablated_by_rank"].tolist() == [4]  # rank 0's half
    assert np.isnan(impact["d_loss"][~impact["exact"].astype(bool)]).all()
