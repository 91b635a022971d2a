"""The model traced once and run once on the probe, every intermediate value kept: what a replay plan
is made from and what a replay reads its unaffected values from."""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

from tb_convviz.analysis import graph_ops as ops
from tb_convviz.model.tracing import traced


class AblationPlanError(RuntimeError):
    """The fx engine cannot ablate this layer exactly (not traced as a node, or a replay mismatch)."""


def logits_of(out: Any, n: int) -> torch.Tensor:
    """`out` if it is class logits (n, classes), else a ValueError saying what ablation needs."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
        raise ValueError("ablation: the model must return class logits shaped (N, classes)")
    return out


def has_tensor(value: Any) -> bool:
    """Whether a node's value holds a tensor (maybe inside lists, tuples or dicts), as opposed to shapes and settings."""
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(has_tensor(v) for v in value.values())
    return False


def elements(value: Any) -> int:
    """Elements of a tensor, or of the tensors in a list or tuple."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(elements(v) for v in value)
    return 0


class _Recorder(fx.Interpreter):
    """Runs the traced graph once and keeps a copy of every node's value as it was produced.

    Copies, because a later in-place op (ReLU(inplace=True), +=) would otherwise rewrite the
    cached value of the node it reads.
    """

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out.clone() if isinstance(out, torch.Tensor) else out
        return out


class TracedProbe:
    """A model traced once and run once on the probe x (N, ...), every intermediate value kept:
    the clean logits (N, K), the FLOPs of a forward, and what plans and replays below any conv
    layer read."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.gm = traced(model)
        self.modules = dict(self.gm.named_modules())
        self.n = x.shape[0]
        recorder = _Recorder(self.gm)
        self.clean = logits_of(recorder.run(x), self.n)
        self.values = recorder.values
        self.nodes = list(self.gm.graph.nodes)
        self.input_dependent: set[fx.Node] = set()
        for node in self.nodes:
            if node.op == "placeholder" or any(a in self.input_dependent for a in node.all_input_nodes):
                self.input_dependent.add(node)
        self.forward_flops = sum(ops.node_flops(nd, self.values, self.modules) for nd in self.nodes)
        self.widest = max((elements(v) for v in self.values.values()), default=1) / self.n
        self.fast_ok = ops.inplace_safe(self.gm.graph, self.modules)

    def batch(self, node: Any) -> bool:
        """A cached tensor with one row per probe image, which stacked copies must repeat."""
        value = self.values.get(node) if isinstance(node, fx.Node) else None
        return node in self.input_dependent and isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == self.n
