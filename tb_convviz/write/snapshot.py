"""The callback's private copy of the user's model, refreshed from a cheap snapshot at each log.

`log()` only clones the parameters and buffers (what a `state_dict` clone costs); the worker loads
them into a copy of the model made once, and analyses run on that copy while training goes on.
"""
from __future__ import annotations

import copy
import types
from typing import Optional, Union

import torch
from torch import nn

State = dict[str, torch.Tensor]


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def state_snapshot(model: nn.Module) -> State:
    """Detached clones of every parameter and buffer, on their own device (no host sync)."""
    with torch.no_grad():
        return {name: t.detach().clone() for name, t in _tensors(model).items()}


def architecture_mismatch(model: nn.Module, reference: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> Optional[str]:
    """Why `model` cannot be logged into a run planned on another model object, or None."""
    found = {name: (tuple(t.shape), t.dtype) for name, t in _tensors(model).items()}
    missing = sorted(set(reference) - set(found))
    extra = sorted(set(found) - set(reference))
    if missing or extra:
        return f"its parameters and buffers differ by name (missing {missing[:5]}, unexpected {extra[:5]})"
    for name, (shape, dtype) in reference.items():
        if found[name] != (shape, dtype):
            return f"{name!r} is {found[name][1]} {list(found[name][0])}, was {dtype} {list(shape)}"
    return None


def signature(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of a model's parameters and buffers: what later logs must match."""
    return {name: (tuple(t.shape), t.dtype) for name, t in _tensors(model).items()}


# Analysed in float32 instead: half-precision weights fail where an analysis makes float32 inputs
# (gratings, noise) and lose the answer where it sums many small terms (statistics, Gram, ablation).
_WIDENED = (torch.float16, torch.bfloat16)


def analysis_dtype(model: nn.Module) -> Optional[torch.dtype]:
    """float32 for a model whose floating parameters or buffers are float16 or bfloat16, else None
    (the model's own dtype: float32 and float64 models are analysed as they are)."""
    return torch.float32 if any(t.dtype in _WIDENED for t in _tensors(model).values()) else None


_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, types.FunctionType, types.BuiltinFunctionType)


def _plain(value: object) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def structure(model: nn.Module) -> list[tuple[str, type, list[tuple[str, str]]]]:
    """The module tree and each module's plain (non-tensor, non-module) public attributes, as text:
    what a copy made earlier must still share with the model (an activation swapped, a conv's
    dilation, a temperature). `training` is left out: the copy is always in eval mode. A few
    milliseconds for a ResNet-50, so every log can afford it."""
    return [
        (name, type(module), [(k, repr(v)) for k, v in vars(module).items() if not k.startswith("_") and k != "training" and _plain(v)])
        for name, module in model.named_modules()
    ]


class ModelCopy:
    """A deep copy of the model in eval mode on `device`, in `dtype` (floating tensors only), with no
    parameter requiring grad."""

    def __init__(self, model: nn.Module, device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None):
        replica = copy.deepcopy(model)
        if device is not None or dtype is not None:
            replica = replica.to(device=device, dtype=dtype)
        replica.eval()
        for p in replica.parameters():
            p.grad = None
            p.requires_grad_(False)
        self.model = replica
        self._targets = _tensors(replica)
        self._structure = structure(model)

    def follows(self, model: nn.Module) -> bool:
        """Whether `model` still has the module tree and plain attributes this copy was made from."""
        return structure(model) == self._structure

    def load(self, state: State) -> nn.Module:
        """Copy a snapshot's values into the copy; returns the refreshed model."""
        with torch.no_grad():
            for name, value in state.items():
                self._targets[name].copy_(value)
        return self.model
