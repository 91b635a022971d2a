"""Replaying a traced model below a conv with one of its output channels zeroed, many filters at once.

Zeroing channel k of a conv changes nothing but channel k up to the first op that mixes channels
(a conv, a linear layer). The ops in between that act on each channel alone (graph_ops: BatchNorm
in eval, activations, pooling, reshapes that keep channel k one contiguous block, elementwise
arithmetic with other tensors — a residual add changes channel k of the sum by channel k's change
only —, depthwise convs, concatenation along channels) run on channel k alone: a `_Block`, the
ablated values of one channel range for each stacked copy. Nonlinear ops are applied to the block
itself (f(a_k ablated)), never to a difference. At the mixing op the change of the block is pushed
through a one-input-channel copy of it, without bias (conv(new_k − old_k, weight[:, k:k+1])): the
op's output is its cached value plus that `_Delta`. A delta stays a delta through linear ops
(a following BatchNorm is folded into those weight columns; residual adds, average pooling,
reshapes, linear layers), so when the rest of the network is linear — global pooling and a linear
head — the logits come out in closed form. At the first nonlinear op the delta is added to the
cache and the rest is re-executed on the stacked copies ("dense"), reading unaffected values from
the cache as broadcast views where the op is elementwise and as repeated copies otherwise.

`TracedProbe.plan` decides how each node below a layer is computed, from the graph, the modules
and the cached shapes, and prices the plan in FLOPs; `TracedProbe.replay` runs it for a batch of
filters. Whatever it does not recognise is re-executed densely, and a model that writes in place
into a value read again later gets the general plan (every downstream node dense). All are exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from tb_convviz.analysis import graph_ops as ops
from tb_convviz.tracing import traced


class AblationPlanError(RuntimeError):
    """The fx engine cannot ablate this layer exactly (not traced as a node, or a replay mismatch)."""


def logits_of(out: Any, n: int) -> torch.Tensor:
    """`out` if it is class logits (n, classes), else a ValueError saying what ablation needs."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
        raise ValueError("ablation: the model must return class logits shaped (N, classes)")
    return out


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return False


def _numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(_numel(v) for v in value)
    return 0


# How a step computes its node → what the node's value is during a replay.
_BLOCK_STEPS = {"zero", "per_channel", "bn", "depthwise", "reshape", "cat", "block_binary"}
_DELTA_STEPS = {
    "mix_conv", "mix_conv_bn", "mix_conv_t", "mix_linear",
    "delta_bn", "delta_conv", "delta_conv_t", "delta_linear", "delta_op", "delta_add", "delta_scale",
}  # fmt: skip


@dataclass
class _Block:
    """Ablated values of channels [offset + k·w, offset + (k+1)·w) of `node`, for filter k of each
    stacked copy: new (B·N, w, *rest); node's cached value is (N, C, *rest)."""

    new: torch.Tensor
    node: fx.Node
    w: int
    offset: int


@dataclass
class _Delta:
    """`node`'s ablated value minus its cached one, c (B·N, *shape), for each stacked copy;
    `owned`: no other reader shares c, so the next op may write into it."""

    c: torch.Tensor
    node: fx.Node
    owned: bool


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
    the clean logits (N, K), the FLOPs of a forward, and replays below any conv layer."""

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
        self.widest = max((_numel(v) for v in self.values.values()), default=1) / self.n
        self.fast_ok = ops.inplace_safe(self.gm.graph, self.modules)

    def batch(self, node: Any) -> bool:
        """A cached tensor with one row per probe image, which stacked copies must repeat."""
        value = self.values.get(node) if isinstance(node, fx.Node) else None
        return node in self.input_dependent and isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == self.n

    def _module(self, node: fx.Node) -> Optional[nn.Module]:
        return self.modules[node.target] if node.op == "call_module" else None

    # ---- planning

    def plan(self, layer: str, fast: bool = True) -> ReplayPlan:
        """The steps that compute the logits with a filter of `layer` zeroed; `fast` uses blocks,
        one-channel mixing ops and deltas where the graph allows, else every downstream node is dense."""
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
            elif not _has_tensor(self.values[node]):
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
                and not _has_tensor(self.values.get(node))
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
            numel = float(_numel(value))
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

    # ---- replay

    def replay(self, plan: ReplayPlan, filters: Sequence[int], identity: bool = False) -> torch.Tensor:
        """Logits (len(filters)·N, K), copy i with filter filters[i] of the plan's layer zeroed;
        identity=True keeps every filter (the check that the plan reproduces the clean logits)."""
        return _Replay(self, plan, filters, identity).run()


class _Replay:
    """One replay of a plan for a batch of B filters: affected values and stacked copies of cached ones."""

    def __init__(self, probe: TracedProbe, plan: ReplayPlan, filters: Sequence[int], identity: bool):
        self.p, self.plan, self.identity = probe, plan, identity
        self.n, self.b = probe.n, len(filters)
        device = probe.clean.device
        self.ks = torch.as_tensor(list(filters), dtype=torch.long, device=device)
        self.bi = torch.arange(self.b, device=device)[:, None]
        self.env: dict[fx.Node, Any] = {}
        self.memo: dict[fx.Node, torch.Tensor] = {}

    def run(self) -> torch.Tensor:
        for node, how in self.plan.steps:
            self.env[node] = getattr(self, "_" + how)(node)
        return logits_of(self.env[self.plan.steps[-1][0]], self.b * self.n)

    # ---- values as steps read them

    def channels(self, w: int, offset: int) -> torch.Tensor:
        """(B, w) channel indices of each copy's block."""
        return offset + self.ks[:, None] * w + torch.arange(w, device=self.ks.device)

    def gather(self, t: torch.Tensor, cidx: torch.Tensor, rank: int) -> torch.Tensor:
        """Tensor t right-aligned to `rank`, its channel axis cut to each copy's block: (B | 1, n', w | 1, ...)."""
        t = t.reshape((1,) * (rank - t.dim()) + tuple(t.shape))
        if t.shape[1] == 1:
            return t.unsqueeze(0)
        b, w = cidx.shape
        return t.index_select(1, cidx.flatten()).unflatten(1, (b, w)).movedim(1, 0)

    def five(self, t: torch.Tensor) -> torch.Tensor:
        """A stacked (B·N, ...) tensor as (B, N, ...)."""
        return t.view(self.b, self.n, *t.shape[1:])

    def old(self, block: _Block) -> torch.Tensor:
        """The cached values of a block, (B, N, w, *rest)."""
        full = self.p.values[block.node]
        return self.gather(full, self.channels(block.w, block.offset), full.dim())

    def change(self, block: _Block) -> torch.Tensor:
        """Ablated − cached values of a block, (B, N, w, *rest)."""
        return self.five(block.new) - self.old(block)

    def dense_of(self, node: fx.Node) -> Any:
        """What a dense step reads for `node`: its stacked value, a block or delta made whole, the
        stacked repeat of a cached per-image tensor, or the cached value itself."""
        value = self.env.get(node)
        if value is not None and not isinstance(value, (_Block, _Delta)):
            return value
        if node in self.memo:
            return self.memo[node]
        full = self.p.values[node]
        if isinstance(value, _Block):
            out = full.repeat(self.b, *([1] * (full.dim() - 1))).view(self.b, *full.shape)
            out[self.bi, :, self.channels(value.w, value.offset)] = self.five(value.new).transpose(1, 2)
            out = out.flatten(0, 1)
        elif isinstance(value, _Delta):
            c = self.five(value.c)
            out = (c.add_(full) if value.owned else c + full).flatten(0, 1)
        elif self.p.batch(node):
            out = full.repeat(self.b, *([1] * (full.dim() - 1)))
        else:
            return full
        self.memo[node] = out
        return out

    def meta_of(self, node: fx.Node) -> Any:
        """What a shape step reads: real stacked values, or meta tensors shaped like the stacked batch."""
        value = self.env.get(node)
        if value is not None and not isinstance(value, (_Block, _Delta)):
            return value
        full = self.p.values[node]
        if isinstance(full, torch.Tensor) and (value is not None or self.p.batch(node)):
            return torch.empty((self.b * self.n, *full.shape[1:]), dtype=full.dtype, device="meta")
        return full

    def execute(self, node: fx.Node, read: Callable[[fx.Node], Any]) -> Any:
        args = fx.node.map_arg(node.args, read)
        kwargs = fx.node.map_arg(node.kwargs, read)
        if node.op == "call_module":
            return self.p.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        raise AblationPlanError(f"cannot replay node {node.name} ({node.op})")

    def delta(self, node: fx.Node, c: torch.Tensor, fresh: bool = True) -> _Delta:
        """A delta of `node`; its c may be written into by the next op if nothing else reads it."""
        return _Delta(c, node, fresh and len(node.users) == 1)

    # ---- dense steps

    def _target(self, node: fx.Node) -> torch.Tensor:
        if any(a in self.env for a in node.all_input_nodes):
            out = self.execute(node, self.dense_of)
        else:
            full = self.p.values[node]
            out = full.repeat(self.b, *([1] * (full.dim() - 1)))
        if not self.identity:
            self.five(out)[self.bi[:, 0], :, self.ks] = 0
        return out

    def _dense(self, node: fx.Node) -> Any:
        return self.execute(node, self.dense_of)

    def _shape(self, node: fx.Node) -> Any:
        return self.execute(node, self.meta_of)

    def _output(self, node: fx.Node) -> torch.Tensor:
        (arg,) = node.args
        value = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if value is None:
            return self.p.clean.repeat(self.b, 1)
        if isinstance(value, _Delta):  # closed form: clean logits + their change
            return (self.five(value.c) + self.p.clean).flatten(0, 1)
        return self.dense_of(arg)

    def _binary(self, node: fx.Node) -> torch.Tensor:
        """An elementwise op in the (B, N, ...) layout: cached operands broadcast over the copies
        as views; a block operand enters as its cached values and then its channels are recomputed
        from the block."""
        op = ops.binary(node)
        out_rank = self.p.values[node].dim()
        values = [self.env.get(a) if isinstance(a, fx.Node) else None for a in node.args]
        dense = [v is not None and not isinstance(v, _Block) for v in values]
        operands = [
            self.five(self.dense_of(a)) if d else v if isinstance(v, _Block) else self.p.values[a] if isinstance(a, fx.Node) else a
            for a, v, d in zip(node.args, values, dense)
        ]  # fmt: skip
        fix = None
        block = next((v for v in operands if isinstance(v, _Block)), None)
        if block is not None:  # that block's channels, from its ablated values, before an in-place op below
            cidx = self.channels(block.w, block.offset)
            parts = [
                self.five(v.new) if isinstance(v, _Block)
                else v[self.bi, :, cidx].transpose(1, 2) if d
                else self.gather(v, cidx, out_rank) if isinstance(v, torch.Tensor)
                else v
                for v, d in zip(operands, dense)
            ]  # fmt: skip
            fix = (cidx, op(*parts))
            operands = [self.p.values[v.node] if isinstance(v, _Block) else v for v in operands]
        shapes = [v.shape for v in operands if isinstance(v, torch.Tensor)]
        if ops.binary_inplace(node) and dense[0] and operands[0].shape == torch.broadcast_shapes(*shapes):
            out = getattr(operands[0], op.__name__ + "_")(operands[1])
        else:
            out = op(*operands)
        if fix is not None:
            cidx, part = fix
            out[self.bi, :, cidx] = part.transpose(1, 2)
        return out.flatten(0, 1)

    # ---- block steps

    def _zero(self, node: fx.Node) -> _Block:
        full = self.p.values[node]
        block = _Block(full.new_zeros((self.b * self.n, 1, *full.shape[2:])), node, 1, 0)
        if self.identity:
            block.new = self.old(block).flatten(0, 1)
        return block

    def _per_channel(self, node: fx.Node) -> _Block:
        src = self.env[node.args[0]]
        new = self.execute(node, lambda a: src.new if a is node.args[0] else self.p.values[a])
        return _Block(new, node, src.w, src.offset)

    def _reshape(self, node: fx.Node) -> _Block:
        w, offset = self.plan.blocks[node]
        src = self.env[node.args[0]]
        return _Block(src.new.reshape(self.b * self.n, w, *self.p.values[node].shape[2:]), node, w, offset)

    def _cat(self, node: fx.Node) -> _Block:
        (src,) = [self.env[a] for a in node.all_input_nodes if a in self.env]
        w, offset = self.plan.blocks[node]
        return _Block(src.new.clone(), node, w, offset)  # cat copies: an in-place op on it must not reach src

    def _bn(self, node: fx.Node) -> _Block:
        src = self.env[node.args[0]]
        scale, shift = _bn_affine(self.p.modules[node.target])
        cidx = self.channels(src.w, src.offset)
        x = self.five(src.new)
        shape = (self.b, 1, src.w) + (1,) * (x.dim() - 3)
        new = torch.addcmul(shift[cidx].view(shape), x, scale[cidx].view(shape))
        return _Block(new.flatten(0, 1), node, src.w, src.offset)

    def _depthwise(self, node: fx.Node) -> _Block:
        m = self.p.modules[node.target]
        src = self.env[node.args[0]]
        w, offset = self.plan.blocks[node]
        cidx = self.channels(w, offset).flatten()
        x = self.five(src.new).transpose(0, 1).flatten(1, 2)  # (N, B·w_in, *s): the copies' blocks as channels
        out = _conv(m, x, m.weight[cidx], None if m.bias is None else m.bias[cidx], self.b * src.w)
        return _Block(out.unflatten(1, (self.b, w)).transpose(0, 1).flatten(0, 1), node, w, offset)

    def _block_binary(self, node: fx.Node) -> _Block:
        w, offset = self.plan.blocks[node]
        cidx = self.channels(w, offset)
        rank = self.p.values[node].dim()
        parts = []
        for a in node.args:
            v = self.env.get(a) if isinstance(a, fx.Node) else None
            if isinstance(v, _Block):
                parts.append(self.five(v.new))
            elif isinstance(a, fx.Node):
                parts.append(self.gather(self.p.values[a], cidx, rank))
            else:
                parts.append(a)
        return _Block(ops.binary(node)(*parts).flatten(0, 1), node, w, offset)

    # ---- delta steps: mixing ops fed by a block

    def _mix_conv(self, node: fx.Node, bn: Optional[nn.Module] = None) -> _Delta:
        """conv(block change, the weight columns of the block's channels [× a following BatchNorm's scale])."""
        m = self.p.modules[node.target]
        src = self.env[node.args[0]]
        cols = _dense_weight(m).index_select(1, self.channels(src.w, src.offset).flatten())  # (Cout, B·w, *k)
        cols = cols.unflatten(1, (self.b, src.w)).transpose(0, 1)  # (B, Cout, w, *k)
        if bn is not None:
            cols = cols * _bn_affine(bn)[0].view(1, -1, *([1] * (cols.dim() - 2)))
        out_shape = self.p.values[node].shape[1:]
        return self.delta(node, _one_channel_conv(m, self.change(src), cols, out_shape).flatten(0, 1))

    def _mix_conv_bn(self, node: fx.Node) -> _Delta:
        conv = node.args[0]
        d = self._mix_conv(conv, bn=self.p.modules[node.target])
        return self.delta(node, d.c)

    def _mix_conv_t(self, node: fx.Node) -> _Delta:
        m = self.p.modules[node.target]
        src = self.env[node.args[0]]
        rows = _dense_weight(m).index_select(0, self.channels(src.w, src.offset).flatten())  # (B·w, Cout, *k)
        x = self.change(src).transpose(0, 1).flatten(1, 2)  # (N, B·w, *s)
        conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[m.weight.dim() - 3]
        out = conv_t(x, rows, None, m.stride, m.padding, m.output_padding, self.b, m.dilation)  # (N, B·Cout, *s')
        return self.delta(node, out.unflatten(1, (self.b, -1)).transpose(0, 1).flatten(0, 1))

    def _mix_linear(self, node: fx.Node) -> _Delta:
        m = self.p.modules[node.target]
        src = self.env[node.args[0]]
        cols = m.weight[:, self.channels(src.w, src.offset)]  # (Cout, B, w)
        return self.delta(node, torch.einsum("bnw,obw->bno", self.change(src), cols).flatten(0, 1))

    # ---- delta steps: linear ops on a delta

    def _delta_bn(self, node: fx.Node) -> _Delta:
        src = self.env[node.args[0]]
        scale = _bn_affine(self.p.modules[node.target])[0].view(-1, *([1] * (src.c.dim() - 2)))
        return self.delta(node, src.c.mul_(scale) if src.owned else src.c * scale)

    def _delta_conv(self, node: fx.Node) -> _Delta:
        m = self.p.modules[node.target]
        return self.delta(node, _conv(m, self.env[node.args[0]].c, m.weight, None, m.groups))

    def _delta_conv_t(self, node: fx.Node) -> _Delta:
        m = self.p.modules[node.target]
        conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[m.weight.dim() - 3]
        c = self.env[node.args[0]].c
        return self.delta(node, conv_t(c, m.weight, None, m.stride, m.padding, m.output_padding, m.groups, m.dilation))

    def _delta_linear(self, node: fx.Node) -> _Delta:
        return self.delta(node, F.linear(self.env[node.args[0]].c, self.p.modules[node.target].weight))

    def _delta_op(self, node: fx.Node) -> _Delta:
        """A linear per-image op (pooling, mean, reshape, ...) applied to the change itself."""
        src = self.env[node.args[0]]
        m = self.p.modules.get(node.target) if node.op == "call_module" else None
        if ops.reshape(node, m):
            return self.delta(node, src.c.reshape(self.b * self.n, *self.p.values[node].shape[1:]), fresh=src.owned)
        c = self.execute(node, lambda a: src.c if a is node.args[0] else self.p.values[a])
        return self.delta(node, c, fresh=c.data_ptr() != src.c.data_ptr() or src.owned)

    def _delta_add(self, node: fx.Node) -> _Delta:
        """Δ(a ± b) = Δa ± Δb: deltas add up, a block adds its change on its channels, cached
        operands change nothing."""
        shape = (self.b, *self.p.values[node].shape)
        acc: Optional[torch.Tensor] = None
        fresh = False
        signs = (1.0, -1.0 if ops.binary(node) is torch.sub else 1.0)
        for a, sign in zip(node.args, signs):
            value = self.env.get(a) if isinstance(a, fx.Node) else None
            if not isinstance(value, _Delta):
                continue
            c = self.five(value.c)
            if acc is None and sign > 0 and value.owned and c.shape == shape:
                acc, fresh = c, True
            elif acc is None:
                acc, fresh = torch.zeros(shape, dtype=c.dtype, device=c.device).add_(c, alpha=sign), True
            else:
                acc.add_(c, alpha=sign)
        assert acc is not None  # the plan sends only nodes reading a delta here
        for a, sign in zip(node.args, signs):
            value = self.env.get(a) if isinstance(a, fx.Node) else None
            if isinstance(value, _Block):
                cidx = self.channels(value.w, value.offset)
                acc[self.bi, :, cidx] += (sign * self.change(value)).transpose(1, 2)
        return self.delta(node, acc.flatten(0, 1), fresh)

    def _delta_scale(self, node: fx.Node) -> _Delta:
        """Δ(a · s) = Δa · s, Δ(a / s) = Δa / s, for an s the ablation does not change."""
        op = ops.binary(node)
        (value,) = [self.env[a] for a in node.args if isinstance(a, fx.Node) and a in self.env]
        c = self.five(value.c)
        operands = [c if isinstance(a, fx.Node) and a in self.env else self.p.values[a] if isinstance(a, fx.Node) else a for a in node.args]
        shapes = [v.shape for v in operands if isinstance(v, torch.Tensor)]
        if value.owned and c.shape == torch.broadcast_shapes(*shapes) and operands[0] is c:
            return self.delta(node, getattr(c, op.__name__ + "_")(operands[1]).flatten(0, 1))
        return self.delta(node, op(*operands).flatten(0, 1))


def _bn_affine(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval BatchNorm as y = scale·x + shift, per channel (C,)."""
    scale = torch.rsqrt(m.running_var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -m.running_mean * scale
    if m.bias is not None:
        shift = shift + m.bias
    return scale, shift


def _conv(m: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], groups: int) -> torch.Tensor:
    """m's convolution (stride, padding and its mode, dilation) with another weight and grouping."""
    conv = (F.conv1d, F.conv2d, F.conv3d)[weight.dim() - 3]
    if m.padding_mode != "zeros":
        x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
        return conv(x, weight, bias, m.stride, 0, m.dilation, groups)
    return conv(x, weight, bias, m.stride, m.padding, m.dilation, groups)


def _one_channel_conv(m: nn.Module, change: torch.Tensor, cols: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """Conv m applied to each copy's block change alone: change (B, N, w, *s), that copy's weight
    columns cols (B, Cout, w, *k) → (B, N, Cout, *s'), without bias.

    Conv1d/2d as im2col + one batched matmul (a grouped conv with one input channel per group is
    several times slower on CPU); Conv3d and string paddings as a conv grouped by copy.
    """
    b, n, w = change.shape[:3]
    x = change.flatten(0, 1)
    dims = x.dim() - 2
    if dims == 3 or isinstance(m.padding, str):
        out = _conv(m, x.unflatten(0, (b, n)).transpose(0, 1).flatten(1, 2), cols.flatten(0, 1), None, b)
        return out.unflatten(1, (b, -1)).transpose(0, 1)
    padding = m.padding
    if m.padding_mode != "zeros":
        x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
        padding = (0,) * dims
    kernel, stride, dilation = m.kernel_size, m.stride, m.dilation
    if dims == 1:  # as a 2-D conv of height 1
        x = x.unsqueeze(2)
        kernel, stride, dilation, padding = (1, *kernel), (1, *stride), (1, *dilation), (0, *padding)
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B·N, w·k, L)
    out = torch.matmul(cols.reshape(b, 1, cols.shape[1], -1), patches.view(b, n, patches.shape[1], -1))
    return out.view(b, n, *out_shape)


def _dense_weight(m: nn.Module) -> torch.Tensor:
    """The weight as if groups were 1, zero between groups — conv (Cout, Cin, *k), transposed
    (Cin, Cout, *k) — so one input channel's column (transposed: row) is a plain slice."""
    w, g = m.weight, m.groups
    if g == 1:
        return w
    rows, per = w.shape[0], w.shape[1]
    out = w.new_zeros((rows, per * g, *w.shape[2:]))
    for i in range(g):
        group = slice(i * rows // g, (i + 1) * rows // g)
        out[group, i * per : (i + 1) * per] = w[group]
    return out
