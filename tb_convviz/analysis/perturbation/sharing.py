"""Several processes sharing one CombinedPass: each makes the reference passes and a contiguous share
of the reduced rows, and one process assembles every share.

Kept apart from the analyses, which declare blocks and never see the ranks: the same plans run
alone or shared, and give the same arrays.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from tb_convviz.analysis.perturbation.engine import Block, CombinedPass, Segment

# (rank, ranks, gather): how several processes split the perturbed rows; gather(obj) → every rank's
# obj on the rank that assembles them (a list), None on the others.
RowShare = tuple[int, int, Callable[[Any], Optional[list]]]


def row_share(blocks: list[Block], rank: int, ranks: int) -> list[Segment]:
    """The rank's contiguous share of all the blocks' rows, in order: (block, first row, end)."""
    total = sum(len(b.inputs) for b in blocks)
    start, stop = total * rank // ranks, total * (rank + 1) // ranks
    segments, offset = [], 0
    for block in blocks:
        lo, hi = max(start - offset, 0), min(stop - offset, len(block.inputs))
        if lo < hi:
            segments.append((block, lo, hi))
        offset += len(block.inputs)
    return segments


def run_shared(combined: CombinedPass, share: RowShare) -> bool:
    """`combined.run()` split between processes; True on the one process that holds the results.

    This process makes the reference passes and its contiguous share of the other blocks' rows;
    `gather(obj)` hands every rank's reductions to one rank (a list there, None elsewhere), which
    assembles them. A rank that fails still meets the gather (with its error), so no rank waits
    forever; the assembling rank raises for any rank that failed.
    """
    rank, ranks, gather = share
    blocks = combined.blocks
    segments = [(b, 0, len(b.inputs)) for b in blocks if len(b.inputs) and b.reduce is None]
    segments += row_share([b for b in blocks if b.reduce is not None and len(b.inputs)], rank, ranks)
    try:
        reduced = combined.make_passes(segments)
    except Exception as e:  # noqa: BLE001 - the gather must still meet, then it is raised here
        gather(f"{type(e).__name__}: {e}")
        raise
    gathered = gather({key: {name: t.cpu() for name, t in layers.items()} for key, layers in reduced.items()})  # gloo pickles CPU tensors
    if gathered is None:
        return False
    for r, part in enumerate(gathered):
        if isinstance(part, str):
            raise RuntimeError(f"rank {r} failed its share of the perturbation passes ({part})")
    combined.assemble({
        block.key: {
            name: torch.cat([p[block.key][name].to(block.inputs.device) for p in gathered if name in p.get(block.key, {})])
            for name in combined.layers
        }
        for block in blocks
        if block.reduce is not None
    })
    return True
