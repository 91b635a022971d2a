"""Half, bfloat16 and float64 models get every analysis: half precision is analysed on a float32
copy, float64 as it is, and every record agrees with a float32 model of the same weights."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tb_convviz import ConvViz, load
from tb_convviz.schema import format as fmt

KINDS = {fmt.KIND_FILTERS, fmt.KIND_MAPS, fmt.KIND_KERNELS, fmt.KIND_PERTURBATION, fmt.KIND_IMPACT, fmt.KIND_PROFILE}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    ).eval()


def _probe() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(24, 3, 12, 12, generator=g), torch.arange(24) % 3


def _log(logdir, model: nn.Module, background: bool) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viz = ConvViz(logdir, probe=_probe(), impact=True, background=background)
        viz.log(model, 0)
        viz.log(model, 1)
        viz.close()
    return [str(w.message) for w in caught if "tb_convviz" in str(w.message) and not any(s in str(w.message) for s in ("fewer than", "slower than training"))]


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_every_floating_dtype_gets_every_analysis_close_to_float32(tmp_path, dtype, background):
    model = _model().to(dtype)
    reference = copy.deepcopy(model).float()  # the same weights, in float32
    assert _log(tmp_path / "theirs", model, background) == []  # no analysis failed
    assert _log(tmp_path / "float32", reference, background) == []
    assert model[0].weight.dtype == dtype  # the user's model is left in its own dtype
    logs = load(str(tmp_path))
    for layer in ("0", "3"):
        assert KINDS <= set(logs.kinds("theirs", layer)), logs.kinds("theirs", layer)
        for kind in KINDS:
            ours, theirs = (logs.bundle(run, layer, kind, 1 if kind != fmt.KIND_KERNELS else 0) for run in ("float32", "theirs"))
            assert sorted(ours.names()) == sorted(theirs.names()), (layer, kind)
            for name in ours.names():
                a, b = ours.array(name), theirs.array(name)
                if a.dtype.kind == "f":
                    finite = np.isfinite(a)
                    assert (finite == np.isfinite(b)).all(), (layer, kind, name)
                    scale = float(np.abs(a[finite]).max()) if finite.any() else 0.0
                    # float64 is analysed in float64: within float32 rounding, carried through q8/f16 storage
                    np.testing.assert_allclose(b[finite], a[finite], rtol=1e-2, atol=1e-2 * scale + 1e-6, err_msg=f"{layer} {kind} {name}")
                elif dtype != torch.float64:  # counts and flags: identical, from identical float32 analyses
                    np.testing.assert_array_equal(b, a, err_msg=f"{layer} {kind} {name}")
