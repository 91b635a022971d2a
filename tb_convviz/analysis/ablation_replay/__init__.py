"""Replaying a traced model below a conv with one of its output channels zeroed, many filters at once.

Zeroing channel k of a conv changes nothing but channel k up to the first op that mixes channels
(a conv, a linear layer). The ops in between that act on each channel alone (graph_ops: BatchNorm
in eval, activations, pooling, reshapes that keep channel k one contiguous block, elementwise
arithmetic with other tensors — a residual add changes channel k of the sum by channel k's change
only —, depthwise convs, concatenation along channels) run on channel k alone: a block, the
ablated values of one channel range for each stacked copy. Nonlinear ops are applied to the block
itself (f(a_k ablated)), never to a difference. At the mixing op the change of the block is pushed
through a one-input-channel copy of it, without bias (conv(new_k − old_k, weight[:, k:k+1])): the
op's output is its cached value plus that delta. A delta stays a delta through linear ops
(a following BatchNorm is folded into those weight columns; residual adds, average pooling,
reshapes, linear layers), so when the rest of the network is linear — global pooling and a linear
head — the logits come out in closed form. At the first nonlinear op the delta is added to the
cache and the rest is re-executed on the stacked copies ("dense"), reading unaffected values from
the cache as broadcast views where the op is elementwise and as repeated copies otherwise.

`planner.plan_replay` decides how each node below a layer is computed, from the graph, the modules
and the cached shapes of a `traced.TracedProbe`, and prices the plan in FLOPs; `executor.replay`
runs it for a batch of filters. Whatever the planner does not recognise is re-executed densely,
and a model that writes in place into a value read again later gets the general plan (every
downstream node dense). All are exact.
"""
