"""Which modules of a model are conv layers, and how their weights read as filters."""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Union

import torch
import torch.fx as fx
from torch import nn

from tb_convviz.model.tracing import traced

CONV_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

LayerSelector = Union[None, Iterable[str], Callable[[str, nn.Module], bool]]


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DataParallel/DistributedDataParallel, so names match the model's own."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def conv_layers(model: nn.Module, layers: LayerSelector = None) -> dict[str, nn.Module]:
    """Conv modules chosen by `layers`: None (all), a list of module names, or a predicate(name, module).

    Raises ValueError naming what is wrong: a name that does not exist or is not a conv,
    or a model/selection with no conv layer at all.
    """
    model = unwrap(model)
    all_convs = {n: m for n, m in model.named_modules() if isinstance(m, CONV_TYPES)}
    if layers is None:
        chosen = all_convs
    elif callable(layers):
        chosen = {n: m for n, m in all_convs.items() if layers(n, m)}
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(
                f"layers: no module named {missing!r} in the model; conv layers are {sorted(all_convs)!r}"
            )
        not_conv = [n for n in names if n not in all_convs]
        if not_conv:
            raise ValueError(f"layers: {not_conv!r} are not conv layers; conv layers are {sorted(all_convs)!r}")
        chosen = {n: all_convs[n] for n in names}
    if not all_convs:
        raise ValueError("model has no conv layer (Conv1d/2d/3d or ConvTranspose1d/2d/3d) to visualize")
    if not chosen:
        raise ValueError(f"layers selected no conv layer; conv layers are {sorted(all_convs)!r}")
    return chosen


def filter_weights(conv: nn.Module) -> torch.Tensor:
    """Weights as (out_channels, in_channels/groups, *kernel), whatever the conv kind.

    ConvTranspose stores (in, out/groups, *k); it is regrouped so that axis 0 is always the
    output filter, which is what the dashboard draws and what ablation removes.
    """
    w = conv.weight.detach()
    if not getattr(conv, "transposed", False):
        return w
    g = conv.groups
    cin, out_per_g = w.shape[0], w.shape[1]
    k = w.shape[2:]
    w = w.reshape(g, cin // g, out_per_g, *k).transpose(1, 2)
    return w.reshape(g * out_per_g, cin // g, *k)


def layer_info(conv: nn.Module) -> dict:
    """Static facts about a conv that the dashboard shows next to its filters."""
    w = filter_weights(conv)
    return {
        "kind": type(conv).__name__,
        "dims": w.dim() - 2,
        "filters": int(w.shape[0]),
        "in_per_group": int(w.shape[1]),
        "kernel_size": [int(s) for s in w.shape[2:]],
        "groups": int(conv.groups),
        "stride": [int(s) for s in conv.stride],
        "transposed": bool(getattr(conv, "transposed", False)),
        "has_bias": conv.bias is not None,
    }


_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def following_batchnorm(model: nn.Module, convs: dict[str, nn.Module]) -> dict[str, str]:
    """{conv name: name of the BatchNorm that directly consumes its output} for folding.

    The graph (torch.fx) is the truth when the model traces; otherwise a BatchNorm registered
    right after the conv with a matching channel count is taken, as in nn.Sequential stacks
    and torchvision-style blocks.
    """
    model = unwrap(model)
    modules = dict(model.named_modules())

    def fits(conv_name: str, bn_name: str) -> bool:
        bn = modules.get(bn_name)
        return (
            isinstance(bn, _BN_TYPES)
            and bn.track_running_stats  # without running stats there is nothing fixed to fold
            and bn.num_features == filter_weights(convs[conv_name]).shape[0]
        )

    graph = _graph_or_none(model)
    found: dict[str, str] = {}
    if graph is not None:
        for node in graph.nodes:
            if node.op == "call_module" and node.target in convs and len(node.users) == 1:
                (user,) = node.users
                if user.op == "call_module" and fits(node.target, user.target):
                    found[node.target] = user.target
        return found
    names = [n for n, m in model.named_modules() if not list(m.children())]
    for conv_name, next_name in zip(names, names[1:]):
        if conv_name in convs and fits(conv_name, next_name):
            found[conv_name] = next_name
    return found


def _graph_or_none(model: nn.Module) -> Optional[fx.Graph]:
    """The model's fx graph, or None when it does not trace (callers then use registration order)."""
    try:
        return traced(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure means "use registration order"
        return None


# Elementwise nonlinearities a conv's output may go through: the feature-visualization objective
# reads a filter after the one that follows it. Modules by type, functions and tensor methods by name.
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
                      nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.PReLU)
ACTIVATION_FUNCTIONS = ("relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish",
                        "hardtanh", "tanh", "sigmoid", "softplus")


def following_activation(model: nn.Module, convs: dict[str, nn.Module], batchnorm: dict[str, str]) -> dict[str, str]:
    """{conv name: the nonlinearity applied to its output} — a module name, or "torch.<function>"
    — where the conv's output (after its BatchNorm, `batchnorm`) goes straight into one. Convs
    followed by anything else (an addition, a pool, nothing) are left out.

    The fx graph is the truth when the model traces; otherwise the leaf module registered right
    after the conv (or its BatchNorm) is taken, as in nn.Sequential stacks.
    """
    model = unwrap(model)
    modules = dict(model.named_modules())
    graph = _graph_or_none(model)
    found: dict[str, str] = {}
    if graph is not None:
        by_target = {n.target: n for n in graph.nodes if n.op == "call_module"}
        for name in convs:
            node = by_target.get(batchnorm.get(name, name))
            if node is None or len(node.users) != 1:
                continue
            (user,) = node.users
            if user.op == "call_module" and isinstance(modules.get(user.target), ACTIVATION_MODULES):
                found[name] = user.target
            elif user.op in ("call_function", "call_method") and getattr(user.target, "__name__", user.target) in ACTIVATION_FUNCTIONS \
                    and user.args and user.args[0] is node:
                found[name] = "torch." + getattr(user.target, "__name__", user.target)
        return found
    names = [n for n, m in model.named_modules() if not list(m.children())]
    following = dict(zip(names, names[1:]))
    for name in convs:
        after = following.get(batchnorm.get(name, name))
        if after is not None and isinstance(modules[after], ACTIVATION_MODULES):
            found[name] = after
    return found


def activation_function(model: nn.Module, spec: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The nonlinearity `following_activation` named, as a function that leaves its input as it
    was (an in-place ReLU runs on a copy)."""
    if spec.startswith("torch."):
        name = spec[len("torch."):]
        fn = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}.get(name) or getattr(torch.nn.functional, name)
        return lambda t: fn(t)
    module = model.get_submodule(spec)
    if getattr(module, "inplace", False):
        return lambda t: module(t.clone())
    return module
