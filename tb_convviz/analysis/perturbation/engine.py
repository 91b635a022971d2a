"""The batched pass engine: every perturbed copy the analyses need, through the model in shared passes.

An analysis is a plan (the blocks of inputs it adds to a `CombinedPass` and how to reduce them)
and a finish (statistics → arrays). Running one pass engine for all of them is what keeps the
default set cheap: as few hooked no-grad passes as `max_batch_bytes` allows, each shared by every
layer and every analysis, with each copy's statistic reduced inside the hook so no full map of a
perturbed copy is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from tb_convviz.analysis.perturbation.measures import channel_stats
from tb_convviz.model.capture import as_model_input, run_with_hooks

Arrays = dict[str, dict[str, np.ndarray]]
# Reduces one layer's float output for some rows of a block, (rows, filters, positions), to
# (rows, ...) statistics; gets the block index of the first row (row r is probe image r % N).
Reducer = Callable[[str, torch.Tensor, int], torch.Tensor]
# Turns the reduced statistics of a plan's blocks into its arrays, once the passes have run.
Finish = Callable[[], Arrays]

# Bound on one pass, in bytes of hooked layer outputs (as float32) summed over every layer and
# image: as if all were alive at once, which a no-grad pass never holds, so the real peak is lower.
DEFAULT_MAX_BATCH_BYTES = 1 << 30

CLEAN = "clean"  # reference block: the probe itself
BLANK = "blank"  # reference block: one image of the probe's mean colour


@dataclass(frozen=True)
class Block:
    """Inputs (rows, C, *spatial) of one kind of perturbed copy; `reduce` None keeps full maps (a reference)."""

    key: str
    inputs: torch.Tensor
    reduce: Optional[Reducer]


Segment = tuple[Block, int, int]  # rows first … end of a block
Reductions = dict[str, dict[str, torch.Tensor]]  # block key → layer → (rows, ...) statistics


class CombinedPass:
    """All the input variants several analyses need, pushed through the model in shared hooked passes.

    Analyses declare blocks first: `reference(key, inputs)` keeps a block's full maps (the clean
    probe, the blank image) for the reducers of other blocks; `add(key, inputs, reduce)` reduces a
    block inside the hook. `run()` makes the passes, references first (so their maps are complete
    before any reducer reads them). The first pass carries one image and measures the bytes its
    hooked outputs take (as float32, all layers summed); every later pass carries as many images as
    fit `max_batch_bytes`, cutting across blocks. Afterwards `maps(key)` gives {layer: (rows,
    filters, positions)} of a reference and `reduced(key)` {layer: (rows, ...)} of another block.
    `passes` lists the images of each pass. Several processes can share the reduced rows
    (`sharing.run_shared` instead of `run`).
    """

    def __init__(
        self, model: nn.Module, layers: Mapping[str, nn.Module], max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> None:
        if max_batch_bytes < 1:
            raise ValueError(f"max_batch_bytes must be at least 1, got {max_batch_bytes}")
        self.model, self.layers, self.max_batch_bytes = model, layers, max_batch_bytes
        self.passes: list[int] = []
        self._blocks: dict[str, Block] = {}
        self._maps: dict[str, dict[str, torch.Tensor]] = {}
        self._reduced: Reductions = {}

    def reference(self, key: str, inputs: torch.Tensor) -> None:
        """Keep the full maps of `inputs` under `key`; a second call with the same key is the same block."""
        if key not in self._blocks:
            self._blocks[key] = Block(key, as_model_input(self.model, inputs.detach()), None)

    def add(self, key: str, inputs: torch.Tensor, reduce: Reducer) -> None:
        """Reduce each layer's output on `inputs` with `reduce` inside the hook."""
        if key in self._blocks:
            raise ValueError(f"a block {key!r} was already added")
        self._blocks[key] = Block(key, as_model_input(self.model, inputs.detach()), reduce)

    def maps(self, key: str) -> dict[str, torch.Tensor]:
        return self._maps[key]

    def reduced(self, key: str) -> dict[str, torch.Tensor]:
        return self._reduced[key]

    @property
    def blocks(self) -> list[Block]:
        """Every block declared so far, references first (stable otherwise)."""
        return sorted(self._blocks.values(), key=lambda b: b.reduce is not None)

    def run(self) -> None:
        """Make the passes over every block declared so far, all in this process."""
        self.assemble(self.make_passes([(b, 0, len(b.inputs)) for b in self.blocks if len(b.inputs)]))

    def assemble(self, reduced: Reductions) -> None:
        """Take `reduced` as the reductions of the reduced blocks (from `make_passes`, or several processes' parts)."""
        self._reduced = reduced

    def make_passes(self, segments: list[Segment]) -> Reductions:
        """Hooked passes over the rows of `segments`, in order: the maps of references are kept,
        the reductions of the other blocks' rows returned (a layer without rows is left out)."""
        parts: dict[str, dict[str, list[torch.Tensor]]] = {b.key: {name: [] for name in self.layers} for b in self.blocks}
        pending = list(segments)
        size = 1
        while pending:
            pieces: list[Segment] = []  # (block, rows lo … hi) of this pass
            room = size
            while pending and room:
                block, lo, end = pending[0]
                hi = min(end, lo + room)
                pieces.append((block, lo, hi))
                room -= hi - lo
                if hi == end:
                    pending.pop(0)
                else:
                    pending[0] = (block, hi, end)
            image_bytes = self._pass(pieces, parts)
            if len(self.passes) == 1:
                size = max(1, self.max_batch_bytes // max(image_bytes, 1))
        return {b.key: {name: torch.cat(p) for name, p in parts[b.key].items() if p} for b in self.blocks if b.reduce is not None}

    def _pass(self, pieces: list[Segment], parts: dict[str, dict[str, list[torch.Tensor]]]) -> int:
        """One hooked no-grad pass over the rows `pieces` name; returns the hooked bytes per image."""
        chunk = torch.cat([block.inputs[lo:hi] for block, lo, hi in pieces])
        self.passes.append(len(chunk))
        image_bytes = 0

        def observe(name: str, out: torch.Tensor) -> None:
            nonlocal image_bytes
            maps = out.detach().float().flatten(2)
            image_bytes += maps[0].numel() * maps.element_size()
            at = 0
            for block, lo, hi in pieces:
                rows = maps[at : at + hi - lo]
                at += hi - lo
                if block.reduce is not None:
                    parts[block.key][name].append(block.reduce(name, rows, lo))
                    continue
                # A copy: an in-place op downstream (ReLU(inplace=True)) would rewrite the output.
                parts[block.key][name].append(rows.clone())
                if hi == len(block.inputs):
                    self._maps.setdefault(block.key, {})[name] = torch.cat(parts[block.key][name])
                    parts[block.key][name].clear()

        with torch.no_grad():
            run_with_hooks(self.model, self.layers, chunk, record=False, edit=observe)
        return image_bytes


def run_alone(
    model: nn.Module, layers: Mapping[str, nn.Module], max_batch_bytes: int, plan: Callable[[CombinedPass], Finish]
) -> Arrays:
    """One analysis on its own: its plan, its passes, its finish."""
    combined = CombinedPass(model, layers, max_batch_bytes)
    finish = plan(combined)
    combined.run()
    return finish()


def prepare(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The probe as the model takes it (its device and dtype), out of any autograd graph."""
    return as_model_input(model, x.detach())


def needs_images(analysis: str, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{analysis}: needs 2-D images (N, C, H, W), got shape {tuple(x.shape)}")


def image_index(first: int, rows: int, n: int, device: torch.device) -> torch.Tensor:
    """Probe image of each row first … first + rows of a block that stacks copies of the n probe images."""
    return torch.arange(first, first + rows, device=device) % n


def blank_reference(combined: CombinedPass, x: torch.Tensor) -> None:
    """The BLANK reference: one image (1, C, *spatial) of the probe's per-channel mean."""
    mean, _ = channel_stats(x)
    combined.reference(BLANK, mean.expand(1, *x.shape[1:]).contiguous())
