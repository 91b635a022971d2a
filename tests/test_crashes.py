"""A job killed with SIGKILL while it writes, at several points of its first step and of a later
one: no reader (`load()`, TensorBoard's Python loader, its Rust data server, through real routes)
ever shows what was not committed, and after `resume` every reader shows the same version of a
step written twice: the one committed last."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from tbserver import get_json, tensorboard, wait_for
from tb_convviz import load
from tb_convviz.read.reader import NotFound
from wire import decode_wire

JOB = Path(__file__).with_name("crashing_job.py")
LAYERS = ("c1", "c2")

# run: (kill step, record of that step it dies before (-1: the commit), torn, steps whole after the
# crash, last step logged before the crash to resume from (None: none), steps logged again).
SHARED = "shared_writer_mid_step"  # through the user's SummaryWriter, with a scalar of its own
SCENARIOS = {
    SHARED: (2, 3, False, [0, 1], 1, (2, 3)),
    "first_at_start": (0, 0, False, [], None, (0, 1)),
    "first_torn_record": (0, 2, True, [], None, (0, 1)),
    "first_before_commit": (0, -1, False, [], None, (0, 1)),
    "later_mid_step": (2, 3, False, [0, 1], 1, (2, 3)),
    "later_torn_commit": (2, -1, True, [0, 1], 1, (2, 3)),
    # steps 0 and 1 whole, then logged again from step 1: step 1 committed twice
    "committed_twice": (2, 0, False, [0, 1], 0, (1, 2)),
}


def _job(logdir: Path, first: int, last: int, version: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(JOB.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, str(JOB), str(logdir), str(first), str(last), str(version), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _shared(logdir: Path) -> list[str]:
    return ["--shared"] if logdir.name == SHARED else []


def _killed_at(logdir: Path, step: int, record: int, torn: bool) -> None:
    job = _job(logdir, 0, step + 1, 0, "--kill", str(step), str(record), *(["--torn"] if torn else []), *_shared(logdir))
    try:
        line = job.stdout.readline()
        assert line.strip() == "READY", job.stderr.read()
        os.kill(job.pid, signal.SIGKILL)
    finally:
        if job.poll() is None:
            job.kill()
        job.wait(timeout=30)
    assert job.returncode == -signal.SIGKILL


def _resumed(logdir: Path, last_whole: Optional[int], steps: tuple[int, int]) -> None:
    extra = ["--resume", str(last_whole)] if last_whole is not None else []
    job = _job(logdir, *steps, 1, *extra, *_shared(logdir))
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0 and "DONE" in out, err


def _loaded_steps(logdir: Path) -> dict[str, dict[str, list[int]]]:
    """{run: {layer/kind: whole steps}} as `load()` reads them."""
    logs = load(str(logdir))
    out: dict[str, dict[str, list[int]]] = {}
    for run in logs.runs():
        for layer in LAYERS:
            for kind in logs.kinds(run, layer):
                try:
                    out.setdefault(run, {})[f"{layer}/{kind}"] = logs.steps(run, layer, kind)
                except NotFound:
                    pass
    return out


def _index_steps(base: str) -> dict[str, dict[str, list[int]]]:
    """{run: {layer: steps}} of the runs whose index lists a layer."""
    index = get_json(base + "/data/plugin/convviz/index")
    return {run["run"]: {layer["name"]: layer["steps"] for layer in run["layers"]} for run in index["runs"] if run["layers"]}


def _route(base: str, path: str) -> tuple[int, dict]:
    try:
        return 200, get_json(base + "/data/plugin/convviz/" + path)
    except urllib.error.HTTPError as e:
        return e.code, {}


def _served(base: str, run: str, step: int) -> dict[str, np.ndarray]:
    """Arrays of one step of layer c2 through the routes: statistics, perturbation and impact."""
    code, layer = _route(base, f"layer?run={run}&layer=c2&step={step}")
    assert code == 200
    out = {f"stats/{k}": decode_wire(v) for k, v in layer["stats"].items()}
    for kind in ("perturbation", "impact"):
        code, answer = _route(base, f"{kind}?run={run}&layer=c2&step={step}")
        assert code == 200 and answer["record_step"] == step
        out.update({f"{kind}/{k}": decode_wire(v) for k, v in answer["arrays"].items()})
    return out


def _loaded(logdir: Path, run: str, step: int) -> dict[str, np.ndarray]:
    logs = load(str(logdir))
    out = {f"stats/{k}": v for k, v in logs.filter_stats(run, "c2", step).items()}
    out.update({f"perturbation/{k}": v for k, v in logs.perturbation(run, "c2", step).items()})
    out.update({f"impact/{k}": v for k, v in logs.impact(run, "c2", step).items()})
    return out


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    shared = sorted(set(a) & set(b))
    assert len(shared) > 20, shared
    for key in shared:
        np.testing.assert_allclose(np.asarray(a[key], np.float64), np.asarray(b[key], np.float64), rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> tuple[Path, dict]:
    """One run per scenario, each killed at its point; the uncommitted step's records, read from
    the file before `resume`, are returned to tell versions apart."""
    logdir = tmp_path_factory.mktemp("crashes") / "logs"
    for run, (step, record, torn, *_rest) in SCENARIOS.items():
        _killed_at(logdir / run, step, record, torn)
    before = {"committed_twice": _loaded(logdir, "committed_twice", 1)}
    return logdir, before


def test_a_killed_job_shows_only_committed_steps_then_resumes_alike_in_every_reader(crashed):
    logdir, before = crashed
    loaded = _loaded_steps(logdir)
    for run, (_, _, _, whole, _, _) in SCENARIOS.items():
        assert all(steps == whole for steps in loaded.get(run, {}).values()), (run, loaded.get(run))
        assert bool(loaded.get(run)) == bool(whole), run  # a crash in the first step: no step at all
    logs = load(str(logdir))
    # A step's events go out at its commit, in one write: a job killed before that leaves none (its
    # bulky records are in the sidecar file, referenced by nothing); one killed halfway through
    # that write leaves a torn tail no reader shows.
    assert "c2" not in logs.layer_kinds("first_before_commit") and "c2" not in logs.layer_kinds("first_torn_record")
    assert any((logdir / "first_before_commit").glob("convviz.*.records"))
    assert "filters" in logs.kinds("later_mid_step", "c1") and loaded["later_mid_step"]["c1/filters"] == [0, 1]

    with tensorboard(logdir, args=["--load_fast=false", "--reload_interval=1"]) as slow, \
         tensorboard(logdir, args=["--load_fast=true", "--reload_interval=1"]) as fast:
        for base in (slow, fast):
            expected = {run: dict.fromkeys(LAYERS, s[3]) for run, s in SCENARIOS.items() if s[3]}
            assert wait_for(lambda: _index_steps(base) == expected, timeout=60), _index_steps(base)
            for run, (step, *_rest) in SCENARIOS.items():
                for path in (f"layer?run={run}&layer=c2&step={step}", f"perturbation?run={run}&layer=c2&step={step}",
                             f"cka_layers?run_a={run}&run_b={run}&step_a={step}&step_b={step}"):
                    assert _route(base, path)[0] in (400, 404), path  # never served, never a 500

        for run, (_, _, _, whole, last_whole, again) in SCENARIOS.items():
            _resumed(logdir / run, last_whole, again)
        final = {run: sorted(set(s[3]) | set(range(s[5][0], s[5][1] + 1))) for run, s in SCENARIOS.items()}
        for base in (slow, fast):
            assert wait_for(lambda: _index_steps(base) == {r: dict.fromkeys(LAYERS, s) for r, s in final.items()}, timeout=90), _index_steps(base)
        loaded = _loaded_steps(logdir)
        for run, steps in final.items():
            assert all(s == steps for k, s in loaded[run].items() if not k.endswith("/kernels")), (run, loaded[run])

        # A step written twice: every reader shows the version committed last, whole.
        for run, step in (("first_torn_record", 0), ("first_before_commit", 0), ("later_mid_step", 2), ("committed_twice", 1), (SHARED, 2)):
            ours = _loaded(logdir, run, step)
            _same(ours, _served(slow, run, step))
            _same(ours, _served(fast, run, step))
        # The user's own scalar in the shared run: the crashed job's value at step 2 is gone too.
        for base in (slow, fast):
            loss = get_json(base + f"/data/plugin/scalars/scalars?run={SHARED}&tag=loss")
            assert [(step, value) for _, step, value in loss] == [(0, 0), (1, 1), (2, 12), (3, 13)], (base, loss)
        twice = _loaded(logdir, "committed_twice", 1)
        assert not np.allclose(twice["stats/l2"], before["committed_twice"]["stats/l2"])  # the new version, not the old
