"""Post-hoc logging of saved checkpoints: the records online logging writes, resumable, and every
file that does not land named with its reason."""
from __future__ import annotations

import argparse
import inspect
import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytest
import torch

from tb_convviz import ConvViz, load
from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz.cli.checkpoints import CheckpointError, checkpoint_step, match_model, scan
from tb_convviz.cli.command import build_parser, main
from tb_convviz.cli.options import CommandLineOptions, argument_docs
from tb_convviz.cli.posthoc import UsageError, _convviz_options, log_checkpoints, read_probe

REPO = Path(__file__).resolve().parents[1]
MODULE = "posthoc_nets"  # written into each test's tmp_path, which becomes the current directory
MODULE_SOURCE = textwrap.dedent(
    """
    from torch import nn

    def build():
        return nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
        )

    def wider():
        return nn.Sequential(
            nn.Conv2d(3, 7, 3, padding=1), nn.BatchNorm2d(7), nn.ReLU(),
            nn.Conv2d(7, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
        )

    def big():  # its second conv (147,456 weights: past the every-log budget) keeps full kernels every kernels_every logs
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2048, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def dim(batch):
        return 0.5 * batch

    class Hparams:
        def __init__(self, lr):
            self.lr = lr
    """
)
IMAGES = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """The model module in tmp_path, which is the current directory (as for a CLI user)."""
    (tmp_path / f"{MODULE}.py").write_text(MODULE_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(MODULE, None)
    import posthoc_nets

    yield posthoc_nets
    sys.modules.pop(MODULE, None)


def weight_series(build, n: int) -> list[dict[str, torch.Tensor]]:
    """n state_dicts of one model drifting like training would: weights, BatchNorm statistics and
    its batch count all change from one to the next."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build()
    states = []
    for _ in range(n):
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if name.endswith("running_var"):
                    t.mul_(1 + 0.2 * torch.rand(t.shape, generator=g))
                elif t.is_floating_point():
                    t.add_(0.1 * torch.randn(t.shape, generator=g))
                else:
                    t.add_(5)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


def save(states: list[dict], steps: list[int], folder: Path, layout: str) -> list[Path]:
    """Checkpoints of `states` in one of three layouts, the step where that layout keeps it."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for state, step in zip(states, steps):
        if layout == "raw":
            path, obj = folder / f"epoch_{step:02d}.pt", state
        elif layout == "lightning":  # a LightningModule holding the net as self.model and a weighted loss
            inner = {f"model.{k}": v for k, v in state.items()}
            inner["loss.weight"] = torch.ones(3)
            path = folder / f"epoch={step}-step={10 * step + 7}.ckpt"
            obj = {"state_dict": inner, "epoch": step, "global_step": 10 * step + 7, "pytorch-lightning_version": "2.6.6"}
        else:
            path, obj = folder / f"checkpoint_{step}.pt", {"model": state, "epoch": torch.tensor(step), "optimizer": {"lr": 0.1}}
        torch.save(obj, path)
        paths.append(path)
    return paths


def log_online(logdir: Path, build, states: list[dict], steps: list[int], **options) -> None:
    """What ConvViz in the training loop writes for these weights (background, as by default)."""
    model = build()
    viz = ConvViz(logdir, probe=(IMAGES, LABELS), **options)
    for i, (state, step) in enumerate(zip(states, steps)):
        model.load_state_dict(state)
        viz.log(model, step, final=i == len(steps) - 1)
    viz.close()


def assert_same_records(expected_dir: Path, actual_dir: Path) -> None:
    """Every record of every layer, kind and step: same steps (each once), same metadata (but what a
    log cost, which is timed), same arrays."""
    expected, actual = load(expected_dir), load(actual_dir)
    layers = expected.layers(".")
    assert actual.layers(".") == layers
    for layer in [fmt.RUN_LAYER, *layers]:
        kinds = expected.kinds(".", layer)
        assert actual.kinds(".", layer) == kinds, layer
        for kind in kinds:
            steps = expected.steps(".", layer, kind)
            assert actual.steps(".", layer, kind) == steps, (layer, kind)
            for step in steps:
                a, b = expected.bundle(".", layer, kind, step), actual.bundle(".", layer, kind, step)
                untimed = [{k: v for k, v in m.items() if k != records.COST} for m in (a.meta, b.meta)]
                assert a.names() == b.names() and untimed[0] == untimed[1], (layer, kind, step)
                for name in a.names():
                    np.testing.assert_allclose(a.array(name), b.array(name), rtol=1e-5, atol=1e-6, err_msg=f"{layer}/{kind}/{step}/{name}")


def cli(argv: list[str]) -> int:
    """The tb-convviz command, in this process."""
    return main(argv)


PARSER_SCRIPT = "import sys; from tb_convviz.cli.command import main; sys.exit(main(sys.argv[1:]))"


def cli_process(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # -P: no current directory on sys.path from Python itself, as for an installed console script
    return subprocess.run([sys.executable, "-P", "-c", PARSER_SCRIPT, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# -- records equal online logging ----------------------------------------------------------------


@pytest.mark.parametrize("layout", ["raw", "lightning", "model"])
def test_each_layout_logs_the_records_online_logging_writes(tmp_path, nets, layout):
    states, steps = weight_series(nets.build, 3), [1, 2, 3]
    save(states, steps, tmp_path / "ckpts", layout)
    torch.save((IMAGES, LABELS), tmp_path / "probe.pt")
    log_online(tmp_path / "online", nets.build, states, steps, impact=True, counterfactuals={"dim": nets.dim})

    status = cli(["log-checkpoints", "--model", f"{MODULE}:build", "--checkpoints", "ckpts/*", "--probe", "probe.pt",
                  "--logdir", "posthoc", "--impact", "--counterfactual", f"dim={MODULE}:dim", "--quiet"])

    assert status == 0
    logs = load(tmp_path / "posthoc")
    assert set(logs.kinds(".", "0")) >= {fmt.KIND_FILTERS, fmt.KIND_KERNELS, fmt.KIND_MAPS, fmt.KIND_PERTURBATION, fmt.KIND_IMPACT}
    assert_same_records(tmp_path / "online", tmp_path / "posthoc")


def test_metrics_given_as_module_attributes_log_what_online_logging_logs(tmp_path, nets):
    from user_metrics import GAIN, HOYER

    states, steps = weight_series(nets.build, 2), [0, 1]
    save(states, steps, tmp_path / "ckpts", "raw")
    torch.save((IMAGES, LABELS), tmp_path / "probe.pt")
    log_online(tmp_path / "online", nets.build, states, steps, perturbations=False, metrics=[HOYER, GAIN])

    status = cli(["log-checkpoints", "--model", f"{MODULE}:build", "--checkpoints", "ckpts/*", "--probe", "probe.pt",
                  "--logdir", "posthoc", "--no-perturbations", "--metrics", "user_metrics:HOYER", "user_metrics:METRICS",
                  "--quiet"])

    assert status == 2  # HOYER twice (alone and in METRICS): names must be unique
    status = cli(["log-checkpoints", "--model", f"{MODULE}:build", "--checkpoints", "ckpts/*", "--probe", "probe.pt",
                  "--logdir", "posthoc", "--no-perturbations", "--metrics", "user_metrics:METRICS", "--quiet"])
    assert status == 0
    logs = load(tmp_path / "posthoc")
    assert {"hoyer", "gain.up", "gain.down"} <= set(logs.filter_table(".", "3", 1))
    assert_same_records(tmp_path / "online", tmp_path / "posthoc")


LIGHTNING_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn
    import lightning.pytorch as pl

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

        def forward(self, x):
            return self.body(x)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.05)
    """
)


def test_a_lightning_trainers_checkpoints_log_what_its_callback_logged(tmp_path, monkeypatch):
    pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed (pip install 'tb_convviz[lightning]')")
    from tb_convviz.lightning import ConvVizCallback

    (tmp_path / "lit_nets.py").write_text(LIGHTNING_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import lit_nets

    x, y = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(2)), torch.arange(16) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    torch.save({"images": x[:6], "labels": y[:6]}, tmp_path / "probe.pt")
    saving = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", save_top_k=-1, every_n_epochs=1)
    online = ConvVizCallback(tmp_path / "online", probe=(x[:6], y[:6]), impact=True)
    trainer = pl.Trainer(max_epochs=3, callbacks=[saving, online], logger=False, enable_progress_bar=False, enable_model_summary=False)
    torch.manual_seed(0)
    trainer.fit(lit_nets.Lit(), loader)

    status = cli(["log-checkpoints", "--model", "lit_nets:Lit", "--checkpoints", "ckpts/*.ckpt", "--probe", "probe.pt",
                  "--logdir", "posthoc", "--impact", "--quiet"])

    assert status == 0
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"]
    assert load(tmp_path / "posthoc").steps(".", "body.0") == [0, 1, 2]
    assert_same_records(tmp_path / "online", tmp_path / "posthoc")


def test_python_api_takes_a_glob_a_probe_tuple_and_convviz_options(tmp_path, nets):
    states = weight_series(nets.build, 3)
    save(states, [0, 1, 2], tmp_path / "ckpts", "raw")
    log_online(tmp_path / "online", nets.build, states, [0, 1, 2], perturbations=False, layers=["3"], kernels_every=2)

    report = log_checkpoints(nets.build, str(tmp_path / "ckpts" / "*.pt"), (IMAGES, LABELS), tmp_path / "posthoc",
                             progress=False, perturbations=False, layers=["3"], kernels_every=2)

    assert [c.step for c in report.logged] == [0, 1, 2] and not report.skipped and report.exit_status == 0
    assert load(tmp_path / "posthoc").layers(".") == ["3"]
    assert_same_records(tmp_path / "online", tmp_path / "posthoc")


# -- resuming ------------------------------------------------------------------------------------


def test_a_rerun_logs_nothing_new_and_a_new_checkpoint_alone_continuing_drift(tmp_path, nets):
    states, steps = weight_series(nets.build, 5), [0, 1, 2, 3, 4]
    paths = save(states, steps, tmp_path / "ckpts", "model")
    log_online(tmp_path / "online", nets.build, states, steps)
    for path in paths[3:]:
        path.rename(path.with_suffix(".later"))
    argv = ["log-checkpoints", "--model", f"{MODULE}:build", "--checkpoints", "ckpts/*.pt", "--logdir", "posthoc", "--quiet"]
    torch.save({"images": IMAGES, "labels": LABELS}, tmp_path / "probe.pt")
    argv += ["--probe", "probe.pt"]

    assert cli(argv) == 0
    first_files = sorted(os.listdir(tmp_path / "posthoc"))
    report = log_checkpoints(nets.build, "ckpts/*.pt", "probe.pt", "posthoc", progress=False)
    assert report.logged == [] and [c.step for c in report.already] == [0, 1, 2]
    assert sorted(os.listdir(tmp_path / "posthoc")) == first_files  # nothing written: no new event file

    for path in paths[3:]:
        path.with_suffix(".later").rename(path)
    report = log_checkpoints(nets.build, "ckpts/*.pt", "probe.pt", "posthoc", progress=False)
    assert [c.step for c in report.logged] == [3, 4] and [c.step for c in report.already] == [0, 1, 2]
    assert len([n for n in os.listdir(tmp_path / "posthoc") if "tfevents" in n]) == 2  # one event file per session, one run

    logs = load(tmp_path / "posthoc")
    assert logs.steps(".", "0") == steps and logs.steps(".", fmt.RUN_LAYER, fmt.KIND_RUN) == [0]
    step3 = logs.bundle(".", "0", fmt.KIND_FILTERS, 3)
    assert (step3.meta["prev_step"], step3.meta["first_step"]) == (2, 0)
    assert (step3.array("cosine_distance_prev") > 0).all()  # drift from step 2's weights, not from itself
    assert_same_records(tmp_path / "online", tmp_path / "posthoc")


def test_a_resumed_run_keeps_the_full_kernel_schedule(tmp_path, nets):
    states, steps = weight_series(nets.big, 5), [0, 1, 2, 3, 4]
    paths = save(states, steps, tmp_path / "ckpts", "raw")
    log_online(tmp_path / "online", nets.big, states, steps, perturbations=False, kernels_every=2)
    options = dict(progress=False, perturbations=False, kernels_every=2)

    log_checkpoints(nets.big, paths[:3], (IMAGES, LABELS), "posthoc", **options)
    report = log_checkpoints(nets.big, paths, (IMAGES, LABELS), "posthoc", **options)

    assert [c.step for c in report.logged] == [3, 4]
    assert load(tmp_path / "posthoc").steps(".", "2", fmt.KIND_KERNELS) == [0, 2, 4]  # first, every 2nd log, final
    assert_same_records(tmp_path / "online", tmp_path / "posthoc")


def test_a_checkpoint_older_than_the_logged_steps_is_skipped_not_written(tmp_path, nets):
    states = weight_series(nets.build, 4)
    paths = save(states, [0, 1, 2, 3], tmp_path / "ckpts", "raw")
    paths[1].rename(tmp_path / "held_back.pt")
    assert log_checkpoints(nets.build, "ckpts/*.pt", (IMAGES, LABELS), "posthoc", progress=False).exit_status == 0
    (tmp_path / "held_back.pt").rename(paths[1])

    report = log_checkpoints(nets.build, "ckpts/*.pt", (IMAGES, LABELS), "posthoc", progress=False)

    assert report.logged == [] and report.exit_status == 1
    assert [p.name for p in report.skipped] == ["epoch_01.pt"]
    assert "comes before step 3" in report.skipped[Path("ckpts/epoch_01.pt")]
    assert load(tmp_path / "posthoc").steps(".", "0") == [0, 2, 3]


def test_a_logdir_of_another_probe_is_a_usage_error(tmp_path, nets):
    save(weight_series(nets.build, 2), [0, 1], tmp_path / "ckpts", "raw")
    log_checkpoints(nets.build, "ckpts/epoch_00.pt", (IMAGES, LABELS), "posthoc", progress=False)
    with pytest.raises(UsageError, match="other probe images"):
        log_checkpoints(nets.build, "ckpts/*.pt", (IMAGES + 1, LABELS), "posthoc", progress=False)
    with pytest.raises(UsageError, match="other probe labels"):
        log_checkpoints(nets.build, "ckpts/*.pt", (IMAGES, LABELS.flip(0)), "posthoc", progress=False)
    assert load(tmp_path / "posthoc").steps(".", "0") == [0]


# -- failures --------------------------------------------------------------------------------------


def test_feature_vis_all_visualises_every_filter_of_every_checkpoint(tmp_path, nets):
    save(weight_series(nets.build, 2), [0, 1], tmp_path / "ckpts", "raw")
    torch.save((IMAGES, LABELS), tmp_path / "probe.pt")

    done = cli_process(["log-checkpoints", "--model", f"{MODULE}:build", "--checkpoints", "ckpts/*.pt", "--probe", "probe.pt",
                        "--logdir", "posthoc", "--no-perturbations", "--feature-vis", "all",
                        "--similarity-images", "0"], cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    logs = load(tmp_path / "posthoc")
    for step in (0, 1):
        for layer, filters in (("0", 6), ("3", 8)):
            found = logs.feature_vis(".", layer, step)
            assert found["step"] == step and list(found["filters"]) == list(range(filters))
            assert found["images"].shape == (filters, 3, 8, 8)
    # The dict form, and the two forms together refused.
    argv = ["log-checkpoints", "--model", "m:f", "--checkpoints", "c.pt", "--logdir", "d"]
    assert _convviz_options(build_parser().parse_args([*argv, "--feature-vis-options", '{"steps": 8}'])) == {"feature_vis": {"steps": 8}}
    assert _convviz_options(build_parser().parse_args([*argv, "--feature-vis"])) == {"feature_vis": True}
    with pytest.raises(UsageError, match="not both"):
        _convviz_options(build_parser().parse_args([*argv, "--feature-vis", "all", "--feature-vis-options", "{}"]))


def test_corrupt_truncated_and_foreign_checkpoints_are_named_and_the_rest_land(tmp_path, nets):
    states = weight_series(nets.build, 5)
    paths = save(states, [0, 1, 2, 3, 4], tmp_path / "ckpts", "raw")
    paths[1].write_bytes(np.random.default_rng(0).bytes(4096))
    torch.manual_seed(0)
    torch.save(nets.wider().state_dict(), paths[2])
    paths[4].write_bytes(paths[4].read_bytes()[:1000])  # training killed while saving the last one
    torch.save((IMAGES, LABELS), tmp_path / "probe.pt")

    done = cli_process(["log-checkpoints", "--model", f"{MODULE}:build", "--checkpoints", "ckpts/*.pt",
                        "--probe", "probe.pt", "--logdir", "posthoc", "--no-perturbations"], cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    assert re.search(r"^skipped \S*epoch_01\.pt: not a torch checkpoint$", done.stdout, re.M), done.stdout
    assert re.search(r"^skipped \S*epoch_02\.pt: does not match the model: .*size mismatch for 0\.weight", done.stdout, re.M), done.stdout
    assert re.search(r"^skipped \S*epoch_04\.pt: a damaged or truncated torch checkpoint", done.stdout, re.M), done.stdout
    assert "Traceback" not in done.stderr
    # non-interactive progress: one plain line per checkpoint
    assert re.search(r"^\[1/3\] epoch_00\.pt step 0 ok \d+\.\ds$", done.stderr, re.M), done.stderr
    assert re.search(r"^\[2/3\] epoch_02\.pt step 2 skipped: does not match the model", done.stderr, re.M), done.stderr
    assert re.search(r"^\[3/3\] epoch_03\.pt step 3 ok \d+\.\ds$", done.stderr, re.M), done.stderr
    assert load(tmp_path / "posthoc").steps(".", "0") == [0, 3]


def test_the_last_checkpoint_failing_to_load_leaves_the_others_and_says_so(tmp_path, nets):
    states = weight_series(nets.build, 3)
    save(states, [0, 1, 2], tmp_path / "ckpts", "raw")
    torch.manual_seed(0)
    torch.save(nets.wider().state_dict(), tmp_path / "ckpts" / "epoch_02.pt")
    out = io.StringIO()

    report = log_checkpoints(nets.build, "ckpts/*.pt", (IMAGES, LABELS), "posthoc", progress=out, perturbations=False)

    assert [c.step for c in report.logged] == [0, 1] and list(report.skipped) == [Path("ckpts/epoch_02.pt")]
    assert "[3/3] epoch_02.pt step 2 skipped: does not match the model" in out.getvalue()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no_colon"], "is not MODULE:FUNCTION"),
        (["--model", "no_such_module_here:build"], "cannot import 'no_such_module_here'"),
        (["--model", f"{MODULE}:missing"], "has no 'missing'"),
        (["--checkpoints", "nothing/*.pt"], "no checkpoint file matches"),
        (["--probe", "missing_probe.pt"], "cannot read probe 'missing_probe.pt'"),
        (["--layers", "nope"], "nope"),
        (["--perturbation-options", '{"no_such_option": 1}'], "unknown options"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, nets, capsys, argv, message):
    save(weight_series(nets.build, 1), [0], tmp_path / "ckpts", "raw")
    torch.save(IMAGES, tmp_path / "probe.pt")
    base = {"--model": f"{MODULE}:build", "--checkpoints": "ckpts/*.pt", "--probe": "probe.pt", "--logdir": "posthoc"}
    base.update(dict(zip(argv[::2], argv[1::2])))

    status = cli(["log-checkpoints", "--quiet", *[x for kv in base.items() for x in kv]])

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("tb-convviz log-checkpoints: error: ") and message in err, err


def test_custom_classes_are_refused_unless_trusted(tmp_path, nets):
    states = weight_series(nets.build, 2)
    save(states, [0, 1], tmp_path / "ckpts", "raw")
    torch.save({"state_dict": states[1], "epoch": 1, "hparams": nets.Hparams(0.1)}, tmp_path / "ckpts" / "epoch_01.pt")

    refused = log_checkpoints(nets.build, "ckpts/*.pt", IMAGES, "refused", progress=False, perturbations=False)
    trusted = log_checkpoints(nets.build, "ckpts/*.pt", IMAGES, "trusted", progress=False, perturbations=False, trust_checkpoints=True)

    why = refused.skipped[Path("ckpts/epoch_01.pt")]
    assert f"{MODULE}.Hparams" in why and "--trust-checkpoints" in why
    assert [c.step for c in refused.logged] == [0]
    assert [c.step for c in trusted.logged] == [0, 1] and not trusted.skipped


def test_warnings_say_what_goes_on_and_a_rerun_does_not_repeat_the_probe_advice(tmp_path, nets, monkeypatch):
    save(weight_series(nets.build, 2), [0, 1], tmp_path / "ckpts", "raw")

    def broken(*args, **kwargs):
        raise ArithmeticError("analysis bug")

    from tb_convviz.write import collect as collect_module

    def logged(patterns: str) -> list[str]:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            log_checkpoints(nets.build, patterns, (IMAGES, LABELS), "run", progress=False, perturbations=False, impact=True)
        return [str(w.message) for w in caught if str(w.message).startswith("tb_convviz")]

    first = logged("ckpts/epoch_00.pt")
    (advice,) = [m for m in first if "examples of 3 class(es)" in m]
    assert "training goes on" not in advice and advice.endswith("this warning is not repeated")
    with monkeypatch.context() as patched:
        patched.setattr(collect_module, "activation_stats", broken)
        second = logged("ckpts/*.pt")
    (failure,) = [m for m in second if "analysis bug" in m]
    assert "training goes on" not in failure and "the other checkpoints are still logged" in failure
    assert not [m for m in second if "examples of 3 class(es)" in m]  # said once for the run, not at each rerun
    assert not [m for m in logged("ckpts/*.pt") if "examples of" in m]  # a rerun that logs nothing says nothing of it


class _RunsACommand:
    """Unpickles as a call to os.system: what a malicious checkpoint holds."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize("zipped", [True, False])
def test_a_malicious_checkpoint_is_refused_as_unsafe_naming_the_blocked_global(tmp_path, zipped):
    from tb_convviz.cli.checkpoints import read_checkpoint

    path = tmp_path / "epoch_01.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _RunsACommand()}, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as refused:
        read_checkpoint(path)
    why = str(refused.value)
    assert why.startswith("refused as unsafe") and f"calls {os.system.__module__}.system" in why
    assert f"blocks module {os.system.__module__}" in why and "is not damaged" in why
    assert "damaged or truncated" not in why and "not a torch checkpoint" not in why


# -- steps, layouts, probes ------------------------------------------------------------------------


def test_step_precedence_epoch_then_global_step_then_the_last_number_in_the_name():
    assert checkpoint_step("epoch=4-step=500.ckpt", {"state_dict": {}, "epoch": 4, "global_step": 500}) == 4
    assert checkpoint_step("run7_ckpt.pt", {"model": {}, "global_step": 1200}) == 1200
    assert checkpoint_step("resnet50_epoch_05.pt", {"0.weight": torch.zeros(1)}) == 5  # a raw state_dict: its name
    assert checkpoint_step("epoch=4-step=500.ckpt", {"epoch": 4}, "name") == 500
    assert checkpoint_step("ckpt_3.pt", {"model": {}, "epoch": 9, "global_step": 90}, "global_step") == 90
    with pytest.raises(CheckpointError, match="no step"):
        checkpoint_step("last.ckpt", {"0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="no 'epoch' entry"):
        checkpoint_step("epoch_3.pt", {"model": {}}, "epoch")


def test_files_of_one_step_log_once_and_the_other_is_named(tmp_path, nets):
    states = weight_series(nets.build, 2)
    paths = save(states, [0, 1], tmp_path, "lightning")
    torch.save(torch.load(paths[1], weights_only=True), tmp_path / "last.ckpt")  # Lightning's copy of the last epoch

    found, skipped = scan(sorted(tmp_path.glob("*.ckpt")))

    assert [(c.path.name, c.step) for c in found] == [(paths[0].name, 0), (paths[1].name, 1)]
    assert list(skipped) == [tmp_path / "last.ckpt"]
    assert skipped[tmp_path / "last.ckpt"].startswith(f"step 1 is also {paths[1].name}, which is logged instead")


def test_model_weights_are_found_under_a_prefix_beside_other_modules():
    w = torch.zeros(2)
    keys = {"0.weight", "0.bias"}
    assert set(match_model({"0.weight": w, "0.bias": w}, keys)) == keys
    assert set(match_model({"model.0.weight": w, "model.0.bias": w, "loss.weight": w}, keys)) == keys
    assert set(match_model({"module._orig_mod.0.weight": w, "module._orig_mod.0.bias": w}, keys)) == keys
    unmatched = {"model.0.weight": w, "model.1.weight": w}
    assert match_model(unmatched, keys) == unmatched  # the strict load then names the difference


@pytest.mark.parametrize("kind", ["tensor", "tuple", "dict", "npz", "npz_images_only"])
def test_probe_files(tmp_path, kind):
    path = tmp_path / ("probe.npz" if kind.startswith("npz") else "probe.pt")
    if kind == "tensor":
        torch.save(IMAGES, path)
    elif kind == "tuple":
        torch.save((IMAGES, LABELS), path)
    elif kind == "dict":
        torch.save({"images": IMAGES, "labels": LABELS}, path)
    elif kind == "npz":
        np.savez(path, images=IMAGES.numpy(), labels=LABELS.numpy())
    else:
        np.savez(path, images=IMAGES.numpy())

    probe = read_probe(path)

    images, labels = probe if isinstance(probe, tuple) else (probe, None)
    np.testing.assert_array_equal(np.asarray(images), IMAGES.numpy())
    if kind in ("tensor", "npz_images_only"):
        assert labels is None
    else:
        np.testing.assert_array_equal(np.asarray(labels), LABELS.numpy())


def test_unreadable_probes_are_usage_errors(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a tensor file")
    np.savez(tmp_path / "no_images.npz", x=np.zeros(3))
    with pytest.raises(UsageError, match="cannot read probe"):
        read_probe(tmp_path / "garbage.pt")
    with pytest.raises(UsageError, match="has no 'images'"):
        read_probe(tmp_path / "no_images.npz")


# -- progress and help -------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_eta_and_a_line_for_each_failure(tmp_path, nets):
    save(weight_series(nets.build, 3), [0, 1, 2], tmp_path / "ckpts", "raw")
    (tmp_path / "ckpts" / "epoch_01.pt").write_bytes(b"\0" * 64)
    terminal = _Terminal()

    log_checkpoints(nets.build, "ckpts/*.pt", IMAGES, "posthoc", progress=terminal, perturbations=False)

    shown = terminal.getvalue()
    assert "epoch_01.pt skipped: not a torch checkpoint" in shown
    assert re.search(r"2/2 \[\d\d:\d\d<\d\d:\d\d", shown), shown  # tqdm's elapsed<remaining
    assert "[1/2]" not in shown  # the plain lines are for non-interactive output only


def _subcommand_actions() -> list[argparse.Action]:
    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return [a for a in subparsers.choices["log-checkpoints"]._actions if not isinstance(a, argparse._HelpAction)]


def test_help_documents_every_option(tmp_path):
    done = cli_process(["log-checkpoints", "--help"], cwd=tmp_path)

    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    squeezed = "".join(done.stdout.split())  # argparse wraps lines, hyphenated words too
    actions = _subcommand_actions()
    assert len(actions) >= 19
    for action in actions:
        assert action.help and len(action.help) > 20, action.option_strings
        for option in action.option_strings:
            assert option in text
        assert "".join(action.help.replace("%%", "%").split()) in squeezed, action.option_strings
    for option in ("--probe-npz", "--impact", "--layers", "--kernels-every", "--map-size", "--map-images",
                   "--map-budget-mb", "--keep-all", "--no-perturbations", "--analysis-device", "--trust-checkpoints"):
        assert option in text
    assert "(default: 20)" in text and "(default: 16)" in text  # ConvViz's own defaults, not copies


# ConvViz's arguments that log-checkpoints sets itself rather than offering them as options.
SET_BY_LOG_CHECKPOINTS = {"log_dir_or_summary_writer", "probe", "background", "every_n_epochs"}


def test_every_convviz_argument_is_an_option_documented_by_convviz_itself(tmp_path):
    """The options are made from ConvViz's signature and docstring: none can be missing, none can drift."""
    done = cli_process(["log-checkpoints", "--help"], cwd=tmp_path)

    text = " ".join(done.stdout.split())
    squeezed = "".join(done.stdout.split())
    docs = argument_docs(ConvViz)
    offered = [name for name in inspect.signature(ConvViz).parameters if name not in SET_BY_LOG_CHECKPOINTS]
    assert {"similarity_images", "response_filters"} <= set(offered)  # the two the hand-copied list had lost
    for name in offered:
        flag = name.replace("_", "-").removesuffix("s")  # --counterfactual, --perturbation-options
        assert re.search(rf"--(no-)?{re.escape(flag)}", text), name
        assert "".join(docs[name].replace("`", "").split()) in squeezed, name


def test_options_the_hand_copied_list_lacked_reach_convviz():
    def parsed(*options: str) -> dict:
        argv = ["log-checkpoints", "--model", "m:f", "--checkpoints", "c.pt", "--logdir", "d", *options]
        return _convviz_options(build_parser().parse_args(argv))

    assert parsed() == {}  # nothing given: ConvViz's own defaults
    assert parsed("--similarity-images", "0", "--response-filters", "none") == {"similarity_images": 0, "response_filters": None}
    assert parsed("--response-filters", "512", "--map-budget-mb", "0.25") == {"response_filters": 512, "map_budget_mb": 0.25}
    assert parsed("--no-perturbations", "--impact-options", '{"top_k": 3}') == {"perturbations": False, "impact": {"top_k": 3}}
    with pytest.raises(UsageError, match="--perturbation-options and --no-perturbations contradict each other"):
        parsed("--no-perturbations", "--perturbation-options", "{}")
    from user_metrics import GAIN, HOYER  # objects of this package's classes, named by MODULE:ATTR

    assert parsed("--metrics", "user_metrics:HOYER", "user_metrics:GAIN") == {"metrics": [HOYER, GAIN]}
    assert parsed("--metrics", "user_metrics:METRICS") == {"metrics": [HOYER, GAIN]}


def described(log_dir: str, probe: Any = None, *, metrics: Sequence[object] = (), size: int = 3,
              device: Optional[str] = None, fast: bool = True) -> None:
    """A callable shaped like ConvViz, for the option maker.

    Args:
        log_dir: where it writes.
        probe: any object.
        metrics: objects a command line cannot name.
        size: how many, ``as a number``.
        device: where it runs.
        fast: take the quick path.
    """


def test_arguments_no_command_line_can_express_are_left_out_and_named():
    options = CommandLineOptions(described, exclude={"log_dir"})

    assert [o.name for o in options.options] == ["size", "device", "fast"] and options.skipped == ["probe", "metrics"]
    parser = argparse.ArgumentParser()
    options.add_to(parser)
    assert "--no-fast" in parser.format_help() and "how many, as a number. (default: 3)" in " ".join(parser.format_help().split())
    assert options.values(parser.parse_args(["--size", "5", "--no-fast"]), resolve=str) == {"size": 5, "fast": False}

    def undocumented(log_dir: str = "") -> None:  # a str option with no Args: text to be its help
        pass

    with pytest.raises(ValueError, match="does not describe 'log_dir'"):
        CommandLineOptions(undocumented)
