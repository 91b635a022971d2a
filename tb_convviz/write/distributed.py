"""ConvViz under torch.distributed: every rank takes a share of the per-filter work, rank 0 writes.

The collectives run on a gloo process group of ConvViz's own, made once at the first log (every
rank logs the same steps, so they make it together), so they never interleave with the
training's own collectives, also when the analysis runs in each rank's worker thread. A timeout on
that group means a rank that never answers makes the others warn rather than hang.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Optional

import torch.distributed as dist

GATHER_TIMEOUT = datetime.timedelta(minutes=10)  # an analysis share may take minutes; a dead rank must not block forever


@dataclass
class Shard:
    """This process's place among the ranks that share ConvViz's work."""

    rank: int
    world: int
    group: Any  # the gloo ProcessGroup; None for one process

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def from_writer(self, obj: Any) -> Any:
        """The writing rank's `obj` on every rank (CPU tensors inside, for gloo)."""
        if self.group is None:
            return obj
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=dist.get_global_rank(self.group, 0), group=self.group)
        return box[0]

    def gather(self, obj: Any) -> Optional[list[Any]]:
        """Every rank's `obj` on rank 0 (None elsewhere); one process returns [obj]."""
        if self.group is None:
            return [obj]
        found: Optional[list[Any]] = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, found, dst=dist.get_global_rank(self.group, 0), group=self.group)
        return found


ALONE = Shard(0, 1, None)


def current_shard() -> Shard:
    """The shard of this process: its own gloo group when a process group of several ranks is up."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return ALONE
    group = dist.new_group(backend="gloo", timeout=GATHER_TIMEOUT)
    return Shard(dist.get_rank(group), dist.get_world_size(group), group)
