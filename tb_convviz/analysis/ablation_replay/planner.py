"""How each node below a conv is computed when one of its filters is zeroed, and what that costs:
the plan a replay follows (see the package's docstring for blocks, deltas and dense steps)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.fx as fx
from torch import nn

from tb_convviz.analysis import graph_ops as ops
from tb_convviz.analysis.ablation_replay.traced import AblationPlanError, TracedProbe, elements, has_tensor

# How a step computes its node → what the node's value is during a replay.
_BLOCK_STEPS = {"zero", "per_channel", "bn", "depthwise", "reshape", "cat", "block_binary"}
_DELTA_STEPS = {
    "mix_conv", "mix_conv_bn", "mix_conv_t", "mix_linear",
    "delta_bn", "delta_conv", "delta_conv_t", "delta_linear", "delta_op", "delta_add", "delta_scale",
}  # fmt: skip


@dataclass
class ReplayPlan:
    """How to compute each node below a layer's conv: steps (node, how) in graph order; `blocks`
    the (w, offset) of nodes computed as blocks; `flops` per filter on the probe (the suffix, with
    one-channel mixing ops); `peak` the largest stacked value per filter and image, in elements;
    `fast` False for the general plan."""

    channels: int
    steps: list[tuple[fx.Node, str]]
    blocks: dict[fx.Node, tuple[int, int]]
    flops: float
    peak: float
    fast: bool


def plan_replay(probe: TracedProbe, layer: str, fast: bool = True) -> ReplayPlan:
    """The steps that compute the logits with a filter of `layer` zeroed; `fast` uses blocks,
    one-channel mixing ops and deltas where the graph allows, else every downstream node is dense."""
    return _Planner(probe).plan(layer, fast)


class _Planner:
    """The rules that choose each node's step, read from one traced probe's graph, modules and cached values."""

    def __init__(self, probe: TracedProbe):
        self.values, self.modules, self.nodes = probe.values, probe.modules, probe.nodes
        self.n, self.input_dependent, self.batch = probe.n, probe.input_dependent, probe.batch

    def _module(self, node: fx.Node) -> Optional[nn.Module]:
        return self.modules[node.target] if node.op == "call_module" else None

    def plan(self, layer: str, fast: bool) -> ReplayPlan:
        targets = {nd for nd in self.nodes if nd.op == "call_module" and nd.target == layer}
        if not targets:
            raise AblationPlanError(f"layer {layer!r} is not called as a module in the traced graph")
        channels = self.values[next(iter(targets))].shape[1]
        kinds: dict[fx.Node, str] = {}  # affected nodes: "block", "delta", "dense" or "shape"
        blocks: dict[fx.Node, tuple[int, int]] = {}
        steps: list[tuple[fx.Node, str]] = []
        for node in self.nodes:
            if node.op == "output":
                steps.append((node, "output"))
                continue
            affected = [a for a in node.all_input_nodes if kinds.get(a, "shape") != "shape"]
            if node in targets:
                how = "zero" if fast and not affected else "target"
            elif not affected and not any(a in kinds for a in node.all_input_nodes):
                continue
            elif not has_tensor(self.values[node]):
                how = "shape"
            elif not affected:
                continue  # a tensor built from shapes of affected values only: unchanged
            elif not fast:
                how = "dense"
            elif any(kinds[a] == "dense" for a in affected):
                how = "binary" if self._binary_ok(node, blocks, kinds) else "dense"
            elif any(kinds[a] == "delta" for a in affected):
                how = self._delta_rule(node, affected, blocks, kinds)
            else:
                how, geometry = self._block_rule(node, blocks)
                if geometry is not None:
                    blocks[node] = geometry
            if how == "zero":
                blocks[node] = (1, 0)
            if how == "delta_bn" and (node.args[0], "mix_conv") in steps and len(node.args[0].users) == 1:
                steps.remove((node.args[0], "mix_conv"))  # the BatchNorm's scale goes into the conv's weight columns
                how = "mix_conv_bn"
            kinds[node] = "shape" if how == "shape" else "block" if how in _BLOCK_STEPS else "delta" if how in _DELTA_STEPS else "dense"
            steps.append((node, how))
        steps = self._with_shapes(steps, kinds)
        flops, peak = self._price(steps, blocks, kinds)
        return ReplayPlan(channels, steps, blocks, flops, peak, fast)

    def _with_shapes(self, steps: list[tuple[fx.Node, str]], kinds: dict[fx.Node, str]) -> list[tuple[fx.Node, str]]:
        """Adds the unaffected input-derived non-tensor values (x.size(0), ...) that dense steps
        read: recomputed on the stacked batch, so a view(n, -1) sees B·N rows."""
        readers = {nd for nd, how in steps if how in ("dense", "target", "shape")}
        extra: set[fx.Node] = set()
        for node in reversed(self.nodes):
            if (
                node not in kinds
                and node in self.input_dependent
                and not has_tensor(self.values.get(node))
                and any(u in readers or u in extra for u in node.users)
            ):
                extra.add(node)
        if not extra:
            return steps
        order = {nd: i for i, nd in enumerate(self.nodes)}
        return sorted(steps + [(nd, "shape") for nd in extra], key=lambda s: order[s[0]])

    def _sole_input(self, node: fx.Node, affected: list[fx.Node]) -> Optional[fx.Node]:
        """The first argument, when it is the only affected input and no other argument is a
        tensor (the op's other arguments are settings, not data)."""
        src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if src is None or affected != [src]:
            return None
        if any(isinstance(self.values.get(a), torch.Tensor) for a in node.all_input_nodes if a is not src):
            return None
        return src

    def _keeps_images(self, node: fx.Node, src: fx.Node, channels: bool) -> bool:
        """The output keeps the image axis (and, if `channels`, the channel axis) of src."""
        out, full = self.values[node], self.values[src]
        return (
            isinstance(out, torch.Tensor)
            and out.dim() >= 2
            and out.shape[0] == self.n
            and full.shape[0] == self.n
            and (not channels or out.shape[1] == full.shape[1])
        )

    def _block_rule(self, node: fx.Node, blocks: dict[fx.Node, tuple[int, int]]) -> tuple[str, Optional[tuple[int, int]]]:
        """How a node whose affected inputs are all blocks is computed, and its block geometry."""
        m = self._module(node)
        affected = [a for a in node.all_input_nodes if a in blocks]
        src = self._sole_input(node, affected)
        if src is not None:
            full = self.values[src]
            w, offset = blocks[src]
            if m is not None and len(node.args) == 1 and not node.kwargs:
                if isinstance(m, ops.CONV) and full.dim() == m.weight.dim():
                    if m.groups == m.in_channels and m.out_channels % m.in_channels == 0:
                        mult = m.out_channels // m.in_channels
                        return "depthwise", (w * mult, offset * mult)
                    return "mix_conv", None
                if isinstance(m, ops.CONV_T) and full.dim() == m.weight.dim():
                    return "mix_conv_t", None
                if isinstance(m, nn.Linear) and full.dim() == 2:
                    return "mix_linear", None
                if isinstance(m, ops.BATCHNORM) and not m.training and m.running_mean is not None and full.dim() >= 2:
                    return "bn", (w, offset)
            if ops.per_channel(node, m, full.dim()) and self._keeps_images(node, src, channels=True):
                return "per_channel", (w, offset)
            if ops.reshape(node, m) and self._keeps_images(node, src, channels=False):
                rest_in, rest_out = math.prod(full.shape[2:]), math.prod(self.values[node].shape[2:])
                if (w * rest_in) % rest_out == 0 and (offset * rest_in) % rest_out == 0:
                    return "reshape", (w * rest_in // rest_out, offset * rest_in // rest_out)
        if node.op == "call_function" and node.target in (torch.cat, torch.concat):
            geometry = self._cat_geometry(node, blocks)
            if geometry is not None:
                return "cat", geometry
        if self._binary_ok(node, blocks, {}):
            geometry = {blocks[a] for a in node.args if isinstance(a, fx.Node) and a in blocks}
            if len(geometry) == 1:
                return "block_binary", geometry.pop()
        return "dense", None

    def _delta_rule(self, node: fx.Node, affected: list[fx.Node], blocks: dict[fx.Node, tuple[int, int]], kinds: dict[fx.Node, str]) -> str:
        """How a node reading deltas (and perhaps blocks) is computed: as a delta where it is
        linear in them, else dense (the delta added to the cache first)."""
        m = self._module(node)
        src = self._sole_input(node, affected)
        if src is not None:
            full = self.values[src]
            if m is not None and len(node.args) == 1 and not node.kwargs:
                if isinstance(m, ops.BATCHNORM) and not m.training and m.running_mean is not None and full.dim() >= 2:
                    return "delta_bn"
                if isinstance(m, ops.CONV):
                    return "delta_conv"
                if isinstance(m, ops.CONV_T):
                    return "delta_conv_t"
                if isinstance(m, nn.Linear):
                    return "delta_linear"
            if (ops.linear(node, m, full.dim()) or ops.reshape(node, m)) and self._keeps_images(node, src, channels=False):
                return "delta_op"
        op = ops.binary(node)
        if op is not None and self._binary_ok(node, blocks, kinds):
            if op in (torch.add, torch.sub):
                return "delta_add"
            if affected == [node.args[0]] or (op is torch.mul and len(affected) == 1):
                return "delta_scale"  # a delta times (or over) something it does not change
        return "dense"

    def _cat_geometry(self, node: fx.Node, blocks: dict[fx.Node, tuple[int, int]]) -> Optional[tuple[int, int]]:
        """torch.cat along channels of one block with unaffected tensors: the block, shifted."""
        parts = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        out = self.values[node]
        if not isinstance(parts, (list, tuple)) or not isinstance(dim, int) or dim % out.dim() != 1:
            return None
        affected = [p for p in parts if isinstance(p, fx.Node) and p in blocks]
        if len(affected) != 1 or not all(isinstance(p, fx.Node) for p in parts):
            return None
        shift = 0
        for p in parts:
            if p is affected[0]:
                break
            shift += self.values[p].shape[1]
        w, offset = blocks[affected[0]]
        return w, offset + shift

    def _binary_ok(self, node: fx.Node, blocks: dict[fx.Node, tuple[int, int]], kinds: dict[fx.Node, str]) -> bool:
        """An elementwise op of two operands, replayed in the (copies, N, ...) layout: blocks keep
        their channel axis in the result, deltas and dense operands (kinds) have the result's
        rank, and the rest broadcast as they did in the forward (scalars, parameters, cached values)."""
        if ops.binary(node) is None:
            return False
        out = self.values[node]
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != self.n:
            return False
        for a in node.args:
            if not isinstance(a, fx.Node):
                if not isinstance(a, (int, float, bool)):
                    return False
                continue
            value = self.values.get(a)
            if not isinstance(value, torch.Tensor) or value.dim() > out.dim():
                return False
            if a in blocks and (value.dim() != out.dim() or value.shape[0] != self.n or value.shape[1] != out.shape[1]):
                return False
            if kinds.get(a) in ("dense", "delta") and value.dim() != out.dim():
                return False
        return True

    def _price(self, steps: list[tuple[fx.Node, str]], blocks: dict[fx.Node, tuple[int, int]], kinds: dict[fx.Node, str]) -> tuple[float, float]:
        """(FLOPs per filter on the probe, peak elements per filter and image) of a plan: blocks
        at their share of the op, mixing ops with one input channel, the rest whole, plus making
        blocks and deltas whole (and repeating cached values) where dense steps read them."""
        flops, peak = 0.0, 1.0
        whole: set[fx.Node] = set()
        for node, how in steps:
            if how == "shape":
                continue
            value = self.values[node]
            numel = float(elements(value))
            if node in blocks:
                share = blocks[node][0] / value.shape[1]
                flops += (numel if how == "zero" else ops.node_flops(node, self.values, self.modules)) * share
                peak = max(peak, numel * share / self.n)
                continue
            peak = max(peak, numel / self.n)
            src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
            if how in ("mix_conv", "mix_conv_bn", "mix_conv_t"):
                conv = src if how == "mix_conv_bn" else node
                block = conv.args[0]
                m = self.modules[conv.target]
                share = blocks[block][0] / self.values[block].shape[1]
                if how == "mix_conv_t":
                    flops += 2.0 * self.values[block].numel() * share * m.out_channels * math.prod(m.kernel_size)
                else:
                    flops += 2.0 * numel * blocks[block][0] * math.prod(m.kernel_size)
            elif how == "mix_linear":
                flops += 2.0 * numel * blocks[src][0]
            elif how in ("delta_conv", "delta_conv_t", "delta_linear", "delta_op"):
                flops += ops.node_flops(node, self.values, self.modules)
            elif how in ("delta_bn", "delta_add", "delta_scale", "binary"):
                flops += numel
            elif how == "output":
                flops += numel if kinds.get(src) == "delta" else 0.0
            elif how == "dense" or any(a in kinds for a in node.all_input_nodes):  # dense, or target reading affected values
                flops += ops.node_flops(node, self.values, self.modules)
            else:  # target with cached inputs: its cached output, repeated
                flops += numel
            if how in ("dense", "target", "binary", "output"):
                for a in node.all_input_nodes:
                    kind = kinds.get(a)
                    made_whole = kind == "delta" and how != "output" or how != "binary" and (kind == "block" or kind is None and self.batch(a))
                    if made_whole and a not in whole:
                        whole.add(a)
                        flops += self.values[a].numel()
        return flops, peak
