"""Full kernels stored as changes from the layer's last keyframe (`q8d`): every logged kernel reads
back within q8's tolerance of the true weights, a layer that barely moved costs a fraction of a
keyframe, one that moved a lot starts a new keyframe, a step that was never committed is never a
reference, and a change whose reference is missing or not the one it was stored against is a
problem of that record alone."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from models import two_conv_net
from tb_convviz import ConvViz
from tb_convviz.read.reader import load
from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz.write.writer import record_summary, tfrecord
from tensorboard.compat.proto import event_pb2
from training import one_thread

LAYER = "3"  # the second conv of two_conv_net: 16 × 8 × 3 × 3


def kernels_record(kernel: np.ndarray, keyframe: records.Keyframe | None = None) -> bytes:
    """A kernels record of `kernel` alone (no bias, no BatchNorm), as the writer builds it."""
    return records.kernels_record(kernel, None, None, None, None, keyframe)


def tolerance(w: np.ndarray) -> np.ndarray:
    """q8's bound per filter, broadcastable against w: (max − min) / 510, plus float rounding."""
    flat = w.reshape(w.shape[0], -1)
    return ((flat.max(1) - flat.min(1)) / 510 * (1 + 1e-5) + 1e-7).reshape(-1, *([1] * (w.ndim - 1)))


def log_run(logdir, weights_per_step: list[dict[str, torch.Tensor]]) -> list[dict[str, np.ndarray]]:
    """Log a two-conv net with every step's kernels kept, its weights set from each entry in turn."""
    torch.manual_seed(0)
    net = two_conv_net((8, 16), 3)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    truth = []
    with one_thread(), ConvViz(str(logdir), probe=x, keep_all=True, perturbations=False, background=False) as viz:
        for step, weights in enumerate(weights_per_step):
            with torch.no_grad():
                for name, w in weights.items():
                    net.get_submodule(name).weight.copy_(w)
            truth.append({name: net.get_submodule(name).weight.detach().numpy().copy() for name in ("0", LAYER)})
            viz.log(net, step)
    return truth


def drifting(steps: int, scale: float, jump_at: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Weights of both convs taking small random steps; at `jump_at` the second conv is redrawn."""
    g = torch.Generator().manual_seed(2)
    w = {"0": torch.randn(8, 3, 3, 3, generator=g), LAYER: torch.randn(16, 8, 3, 3, generator=g)}
    out = []
    for step in range(steps):
        if step == jump_at:
            w[LAYER] = torch.randn(16, 8, 3, 3, generator=g)
        out.append({k: v.clone() for k, v in w.items()})
        w = {k: v + scale * v.std() * torch.randn(v.shape, generator=g) for k, v in w.items()}
    return out


def test_changes_read_back_within_the_q8_tolerance_and_cost_less(tmp_path):
    truth = log_run(tmp_path / "run", drifting(5, 0.01))
    logs = load(tmp_path)
    stored = [logs.bundle("run", LAYER, fmt.KIND_KERNELS, step) for step in range(5)]
    assert [b.is_change(records.KERNEL) for b in stored] == [False, True, True, True, True]
    assert all(records.kernel_reference(b) == 0 for b in stored[1:])  # every change is from the keyframe
    for step, weights in enumerate(truth):
        for name, w in weights.items():
            got = logs.kernels("run", name, step)
            assert got.shape == w.shape
            assert (np.abs(got - w) <= tolerance(w)).all(), (name, step)
            # one filter alone decodes to the same values as the whole layer's row
            np.testing.assert_array_equal(logs.bundle("run", name, fmt.KIND_KERNELS, step).array(records.KERNEL, 5), got[5])
    kernel_bytes = [b._raw(records.KERNEL)[0]["nbytes"] for b in stored]
    assert max(kernel_bytes[1:]) < 0.5 * kernel_bytes[0]
    assert not logs.problems.listed()


def test_a_layer_that_moved_a_lot_starts_a_new_keyframe(tmp_path):
    truth = log_run(tmp_path / "run", drifting(4, 0.01, jump_at=2))
    logs = load(tmp_path)
    stored = [logs.bundle("run", LAYER, fmt.KIND_KERNELS, step) for step in range(4)]
    assert [b.is_change(records.KERNEL) for b in stored] == [False, True, False, True]
    assert records.kernel_reference(stored[3]) == 2
    for step in range(4):
        assert (np.abs(logs.kernels("run", LAYER, step) - truth[step][LAYER]) <= tolerance(truth[step][LAYER])).all()
    # the first conv did not jump: it still refers to the first keyframe
    assert records.kernel_reference(logs.bundle("run", "0", fmt.KIND_KERNELS, 3)) == 0


def test_a_step_never_committed_is_never_a_reference():
    """The writer's memory of keyframes moves only when a step is written: records collected for a
    step whose writing failed do not become what later records are stored against."""
    from tb_convviz.write.collect import Plan

    plan = Plan(layers=[LAYER], batchnorm={})
    kernel = np.random.default_rng(0).standard_normal((16, 8, 3, 3)).astype(np.float32)
    first = records.Keyframe.of(0, kernels_record(kernel))
    assert first is not None
    plan.pending_keyframes[LAYER] = first
    plan.pending_keyframes.clear()  # what collect_step does when a new step begins
    assert plan.keyframes == {}
    plan.pending_keyframes[LAYER] = first
    plan.keyframes_written()
    assert plan.keyframes[LAYER] is first and plan.pending_keyframes == {}
    change = kernels_record(kernel + 0.001, plan.keyframes[LAYER])
    assert records.Keyframe.of(1, change) is None  # a change is never itself a reference


def test_a_change_without_its_reference_is_a_problem_of_that_record_alone(tmp_path):
    log_run(tmp_path / "run", drifting(3, 0.01))
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    stranger = records.Keyframe.of(0, kernels_record(kernel))
    missing = records.Keyframe(7, stranger.bundle)  # names a step the log does not hold
    stamp = time.time()
    events = []
    for step, keyframe in ((10, stranger), (11, missing)):
        payload = kernels_record(kernel + 0.001, keyframe)
        events.append(event_pb2.Event(wall_time=stamp, step=step, summary=record_summary(LAYER, fmt.KIND_KERNELS, payload)))
        events.append(event_pb2.Event(wall_time=stamp, step=step, summary=record_summary(
            fmt.RUN_LAYER, fmt.KIND_COMMIT, records.commit_record(1))))
    (tmp_path / "run" / "events.out.tfevents.9999999999.crafted").write_bytes(
        b"".join(tfrecord(e.SerializeToString()) for e in events))
    logs = load(tmp_path)
    for step in (10, 11):
        with pytest.warns(RuntimeWarning, match=f"skipped record '3/kernels' of run 'run' at step {step}"):
            with pytest.raises(LookupError, match="unreadable"):
                logs.kernels("run", LAYER, step)
    reasons = {p["step"]: p["reason"] for p in logs.problems.listed()}
    assert "not the record it was stored against" in reasons[10]  # step 0 exists, but is another kernel
    assert "is not in the log" in reasons[11]
    assert logs.kernels("run", LAYER, 2).shape == (16, 8, 3, 3)  # the run's own steps still read


def test_a_change_that_does_not_inflate_says_so_when_read():
    """Its header is whole (the record decodes, its shapes read) but its compressed changes are
    not: reading the kernel is a ValueError naming the array, not wrong numbers."""
    kernel = np.random.default_rng(4).standard_normal((16, 8, 3, 3)).astype(np.float32)
    keyframe = records.Keyframe.of(0, kernels_record(kernel))
    change = bytearray(kernels_record(kernel + 0.001, keyframe))
    bundle = fmt.decode_bundle(bytes(change))
    start = len(change) - len(bundle._payload) + bundle._raw(records.KERNEL)[0]["offset"] + 4 * 16
    change[start + 2 : start + 6] = b"\xff\xff\xff\xff"  # inside the zlib stream, past its header
    broken = fmt.decode_bundle(bytes(change))
    records.resolve_reference(broken, keyframe.bundle)
    assert broken.shape(records.KERNEL) == bundle.shape(records.KERNEL) == (16, 8, 3, 3)
    with pytest.raises(ValueError, match="'kernel'"):
        broken.array(records.KERNEL)
