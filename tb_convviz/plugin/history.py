"""Per-filter histories of a layer, kept as columns so the detail panel's history costs a slice.

Read straight from the logs, one filter's history decodes every step's record of its layer for one
value each: 100 records of 2048 filters per click on a ResNet-50 logged for 100 epochs. Decoded
once into one (steps, filters) column per per-filter scalar, any filter of the layer, at any step,
is a slice until the run changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from tb_convviz import format as fmt
from tb_convviz import records
from tb_convviz.memo import Memo
from tb_convviz.reader import ConvVizReader

# A 2048-filter layer's 9 statistics over 100 steps are 7 MB, its perturbation and impact scalars
# (24 more) another 19 MB: this keeps that layer of both runs with all three kinds, or dozens of
# smaller layers (every layer of a ResNet-50 run, 26,560 filters, is 91 MB of statistics).
HISTORY_CACHE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Columns:
    """One stream's per-filter scalars over its steps.

    `values[name]` is (k, filters), one row per step whose record holds `name`, in step order
    (k = len(steps) unless the name is missing from some steps' records). Dtypes are the ones the
    records decode to (float32, or int32/uint8 for counts and flags): 4 bytes a value at most.
    """

    steps: list[int]
    values: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.values.values())

    def of_filter(self, index: int) -> dict[str, np.ndarray]:
        """Filter `index`'s history: {name: (k,)}, names in the order the records first hold them."""
        return {name: v[:, index] for name, v in self.values.items()}


def stat_columns(bundle: fmt.Bundle) -> dict[str, np.ndarray]:
    """A filters record's statistics, one value per filter (filters,): the first value of each
    filter's entry, what the detail panel shows (every statistic is one value per filter today)."""
    out = {}
    for name in bundle.names():
        if name != records.TILES:
            a = bundle.array(name)
            out[name] = a.reshape(a.shape[0], -1)[:, 0]
    return out


def analysis_columns(bundle: fmt.Bundle, n_filters: int) -> dict[str, np.ndarray]:
    """A perturbation or impact record's arrays that hold one value per filter (n_filters,)."""
    out = {}
    for name in bundle.names():
        a = bundle.array(name)
        if a.shape == (n_filters,):
            out[name] = a
    return out


def stack_columns(per_step: Iterable[tuple[int, dict[str, np.ndarray]]]) -> Columns:
    """Columns from each step's {name: (filters,)}, steps in the order given."""
    steps: list[int] = []
    rows: dict[str, list[np.ndarray]] = {}
    for step, columns in per_step:
        steps.append(step)
        for name, column in columns.items():
            rows.setdefault(name, []).append(column)
    return Columns(steps, {name: np.stack(r) for name, r in rows.items()})


def read_columns(reader: ConvVizReader, run: str, layer: str, kind: str, n_filters: int) -> Columns:
    """Every step's per-filter scalars of one stream (`kind` filters, perturbation or impact)."""
    extract: Callable[[fmt.Bundle], dict[str, np.ndarray]] = (
        stat_columns if kind == fmt.KIND_FILTERS else lambda b: analysis_columns(b, n_filters)
    )
    return stack_columns((step, extract(bundle)) for step, bundle in reader.bundles(run, layer, kind))


class HistoryCache:
    """`read_columns` per (run, layer, kind, filters), valid while `reader.signature(run)` stays
    the same (a new step changes it), least recently used first out past `max_bytes`.

    Memory: at most `max_bytes`, or the one largest entry when that alone is bigger.
    """

    def __init__(self, max_bytes: int = HISTORY_CACHE_BYTES):
        self._memo: Memo[Columns] = Memo(max_bytes=max_bytes, size=lambda columns: columns.nbytes)

    def columns(self, reader: ConvVizReader, run: str, layer: str, kind: str, n_filters: int) -> Columns:
        return self._memo.get_or_compute(
            (run, layer, kind, n_filters), lambda: read_columns(reader, run, layer, kind, n_filters), version=reader.signature(run)
        )
