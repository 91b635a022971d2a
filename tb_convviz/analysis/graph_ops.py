"""What the ops of a torch.fx graph do to channels, for replaying a model below an ablated conv.

Which ops act on each (image, channel) alone, which are linear in their input, which reshape
without reordering, which are elementwise binary, which write into their input or return a view
of it — and a timing-free FLOP count per node. Pure lookups over nodes and modules: the replay
planner (ablation_replay.planner) adds the shape checks that make a rule apply to a given node.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}

# Linear in the input and per image: a change c of the input changes the output by op(c).
_LINEAR_MODULES = (
    nn.Identity, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.Upsample,
)  # fmt: skip
_LINEAR_FUNCTIONS = {
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, F.interpolate, torch.neg, operator.neg,
}  # fmt: skip
_LINEAR_METHODS = {"neg", "contiguous", "clone"}
_LINEAR_REDUCTIONS = {torch.mean, torch.sum, "mean", "sum"}

# Channel c of the output depends on channel c of the input only (each image on its own).
_PER_CHANNEL_MODULES = _LINEAR_MODULES + (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.ConstantPad3d,
)  # fmt: skip
_PER_CHANNEL_FUNCTIONS = _LINEAR_FUNCTIONS | {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh,
    torch.exp, torch.abs, torch.square, torch.clamp, torch.clip, F.max_pool1d, F.max_pool2d,
    F.max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.lp_pool1d, F.lp_pool2d, F.pad,
}  # fmt: skip
_PER_CHANNEL_METHODS = _LINEAR_METHODS | {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "abs", "square", "clamp", "clamp_", "clip",
}  # fmt: skip
_REDUCTIONS = _LINEAR_REDUCTIONS | {torch.amax, torch.amin, torch.std, torch.var, "amax", "amin", "std", "var"}

# Row-major reshapes: each image's values keep their order.
_RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}

# Elementwise binary ops, by their out-of-place torch function.
_BINARY = {
    operator.add: torch.add, operator.sub: torch.sub, operator.mul: torch.mul, operator.truediv: torch.div,
    operator.iadd: torch.add, operator.isub: torch.sub, operator.imul: torch.mul, operator.itruediv: torch.div,
    torch.add: torch.add, torch.sub: torch.sub, torch.mul: torch.mul, torch.div: torch.div,
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "add_": torch.add, "sub_": torch.sub, "mul_": torch.mul, "div_": torch.div,
}  # fmt: skip
_INPLACE_BINARY = {operator.iadd, operator.isub, operator.imul, operator.itruediv, "add_", "sub_", "mul_", "div_"}

# Ops whose output may share memory with their first input.
_VIEW_METHODS = {
    "view", "reshape", "flatten", "squeeze", "unsqueeze", "transpose", "permute", "t", "expand", "expand_as",
    "narrow", "select", "contiguous", "unflatten", "view_as", "reshape_as", "detach", "__getitem__",
    "unbind", "split", "chunk", "movedim", "swapaxes", "unfold", "as_strided",
}  # fmt: skip
_VIEW_FUNCTIONS = {
    operator.getitem, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose,
    torch.permute, torch.narrow, torch.select, torch.chunk, torch.split, torch.unbind, torch.t,
    torch.movedim, torch.swapaxes, torch.detach,
}  # fmt: skip
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, torch.relu_}


def _in(target: Any, table: set) -> bool:
    try:
        return target in table
    except TypeError:  # an unhashable call target is in no table
        return False


def _dims(node: fx.Node, rank: int) -> Optional[list[int]]:
    """The reduced dims of a mean/sum/... node, normalized to [0, rank); None when it reduces all."""
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if isinstance(dims, int):
        dims = [dims]
    if not isinstance(dims, (list, tuple)) or not dims or not all(isinstance(d, int) for d in dims):
        return None
    return [d % rank for d in dims]


def _dropout_off(node: fx.Node, module: Optional[nn.Module]) -> Optional[bool]:
    """True for dropout that is off (eval), False for dropout that is on, None for other ops."""
    if isinstance(module, _DROPOUT):
        return not module.training
    if node.op == "call_function" and _in(node.target, _DROPOUT_FUNCTIONS):
        return node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True) is False
    return None


def _functional_in(node: fx.Node, rank: int, functions: set, methods: set, reductions: set, first_reduced_dim: int) -> bool:
    """A function or method call in `functions` / `methods`, or a reduction in `reductions` over
    dims that all lie at or after `first_reduced_dim` (2: spatial only; 1: channels too)."""
    if node.op not in ("call_function", "call_method"):
        return False
    if _in(node.target, reductions):
        dims = _dims(node, rank)
        return dims is not None and min(dims) >= first_reduced_dim
    return _in(node.target, functions if node.op == "call_function" else methods)


def per_channel(node: fx.Node, module: Optional[nn.Module], rank: int) -> bool:
    """The op maps channel c of its first argument (rank `rank`) to channel c of its output alone."""
    dropout = _dropout_off(node, module)
    if dropout is not None:
        return dropout
    if module is not None:
        if isinstance(module, nn.PReLU):
            return module.num_parameters == 1
        return isinstance(module, _PER_CHANNEL_MODULES)
    return _functional_in(node, rank, _PER_CHANNEL_FUNCTIONS, _PER_CHANNEL_METHODS, _REDUCTIONS, 2)


def linear(node: fx.Node, module: Optional[nn.Module], rank: int) -> bool:
    """The op is linear in its first argument (rank `rank`) and treats each image on its own."""
    dropout = _dropout_off(node, module)
    if dropout is not None:
        return dropout
    if module is not None:
        return isinstance(module, _LINEAR_MODULES)
    return _functional_in(node, rank, _LINEAR_FUNCTIONS, _LINEAR_METHODS, _LINEAR_REDUCTIONS, 1)


def reshape(node: fx.Node, module: Optional[nn.Module]) -> bool:
    """A row-major reshape of its first argument (view, flatten, squeeze, ...)."""
    if module is not None:
        return isinstance(module, _RESHAPE_MODULES)
    if node.op == "call_function":
        return _in(node.target, _RESHAPE_FUNCTIONS)
    return node.op == "call_method" and _in(node.target, _RESHAPE_METHODS)


def binary(node: fx.Node) -> Optional[Any]:
    """The out-of-place torch function of an elementwise binary node (a + b, x.mul_(y), ...), else None."""
    if node.op not in ("call_function", "call_method") or len(node.args) != 2 or node.kwargs:
        return None
    try:
        return _BINARY.get(node.target)
    except TypeError:  # an unhashable call target is no binary op
        return None


def binary_inplace(node: fx.Node) -> bool:
    return _in(node.target, _INPLACE_BINARY)


def is_view(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_method":
        return node.target in _VIEW_METHODS
    if node.op == "call_function":
        return _in(node.target, _VIEW_FUNCTIONS)
    return node.op == "call_module" and isinstance(modules[node.target], (nn.Identity, nn.Flatten, nn.Unflatten, *_DROPOUT))


def mutates(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether the op writes into its first argument (conservative: a positional True counts)."""
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    if node.op == "call_function":
        if _in(node.target, _INPLACE_FUNCTIONS) or node.kwargs.get("inplace") is True:
            return True
        return getattr(node.target, "__module__", "") == "torch.nn.functional" and any(a is True for a in node.args[1:])
    return False


def inplace_safe(graph: fx.Graph, modules: dict[str, nn.Module]) -> bool:
    """True when no in-place op rewrites a value (or what it views) that another node also reads.

    A cache of each value as it was produced stays right for every reader only then;
    `out += identity` and `ReLU(inplace=True)` on a value nothing else reads are fine.
    """
    for node in graph.nodes:
        if not mutates(node, modules) or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0]
        while True:
            if len(src.users) != 1:
                return False
            aliases = is_view(src, modules) or mutates(src, modules)
            if not aliases or not src.args or not isinstance(src.args[0], fx.Node):
                break
            src = src.args[0]
    return True


def node_flops(node: fx.Node, values: dict[fx.Node, Any], modules: dict[str, nn.Module]) -> float:
    """A timing-free cost of computing `node` once on the probe: 2·MACs for convs, linear layers and
    matmuls, one per output element for everything else, 0 for views and non-tensor values."""
    out = values.get(node)
    if not isinstance(out, torch.Tensor) or is_view(node, modules):
        return 0.0
    first = values.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, CONV):
            return 2.0 * out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        if isinstance(m, CONV_T) and isinstance(first, torch.Tensor):
            return 2.0 * first.numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)
        if isinstance(m, nn.Linear):
            return 2.0 * out.numel() * m.in_features
    if node.op == "call_function" and isinstance(first, torch.Tensor):
        if _in(node.target, {F.linear, torch.matmul, operator.matmul, torch.mm, torch.bmm}) and first.dim() > 0:
            return 2.0 * out.numel() * first.shape[-1]
        if _in(node.target, {F.conv1d, F.conv2d, F.conv3d}) and len(node.args) > 1:
            w = values.get(node.args[1])
            if isinstance(w, torch.Tensor):
                return 2.0 * out.numel() * math.prod(w.shape[1:])
    return float(out.numel())
