"""Running a replay plan for a batch of filters: the stacked copies, each with one filter zeroed,
computed step by step as blocks, deltas or dense values (see the package's docstring)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from tb_convviz.analysis import graph_ops as ops
from tb_convviz.analysis.ablation_replay.planner import ReplayPlan
from tb_convviz.analysis.ablation_replay.traced import AblationPlanError, TracedProbe, logits_of


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



def replay(probe: TracedProbe, plan: ReplayPlan, filters: Sequence[int], identity: bool = False) -> torch.Tensor:
    """Logits (len(filters)·N, K), copy i with filter filters[i] of the plan's layer zeroed;
    identity=True keeps every filter (the check that the plan reproduces the clean logits)."""
    return _Replay(probe, plan, filters, identity).run()


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
