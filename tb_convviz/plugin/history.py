"""Per-filter histories of a layer, kept as columns so the detail panel's history costs a slice.

Read straight from the logs, one filter's history decodes every step's record of its layer for one
value each: 100 records of 2048 filters per click on a ResNet-50 logged for 100 epochs. Decoded
once into one (steps, filters) column per per-filter scalar, any filter of the layer, at any step,
is a slice until the run changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from tb_convviz.schema import format as fmt
from tb_convviz.read.memo import Memo
from tb_convviz.read.reader import ConvVizReader
from tb_convviz.schema.columns import Column
from tb_convviz.read.table import record_columns

# A 2048-filter layer's 9 statistics over 100 steps are 7 MB, its perturbation and impact scalars
# (24 more) another 19 MB: this keeps that layer of both runs with all three kinds, or dozens of
# smaller layers (every layer of a ResNet-50 run, 26,560 filters, is 91 MB of statistics).
HISTORY_CACHE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Columns:
    """One stream's per-filter columns over its steps.

    `values[name]` is (k, filters), one row per step whose record holds `name`, in step order
    (k = len(steps) unless the name is missing from some steps' records); an interval companion
    is (k, filters, 2) under its `ci` name. `declared` holds each column's declaration.
    """

    steps: list[int]
    values: dict[str, np.ndarray]
    declared: dict[str, Column] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.values.values())

    def of_filter(self, index: int) -> dict[str, np.ndarray]:
        """Filter `index`'s history: {name: (k,) or (k, 2)}, names in the order the records first hold them."""
        return {name: v[:, index] for name, v in self.values.items()}


def stack_columns(per_step: Iterable[tuple[int, dict[str, np.ndarray]]], declared: Optional[dict[str, Column]] = None) -> Columns:
    """Columns from each step's {name: (filters,) or (filters, 2)}, steps in the order given."""
    steps: list[int] = []
    rows: dict[str, list[np.ndarray]] = {}
    for step, columns in per_step:
        steps.append(step)
        for name, column in columns.items():
            rows.setdefault(name, []).append(column)
    return Columns(steps, {name: np.stack(r) for name, r in rows.items()}, dict(declared or {}))


def read_columns(reader: ConvVizReader, run: str, layer: str, kind: str, n_filters: int) -> Columns:
    """Every step's per-filter columns of one stream (`table.record_columns`: what the filter
    table shows, so a history and the table never disagree); unreadable records are left out."""
    labels = reader.probe_labels(run) if kind == fmt.KIND_IMPACT else None
    declared: dict[str, Column] = {}

    def of_step(bundle: fmt.Bundle) -> dict[str, np.ndarray]:
        out = {}
        for column, values, interval in record_columns(kind, bundle, labels, n_filters):
            declared.setdefault(column.name, column)
            out[column.name] = values
            if interval is not None:
                out[column.ci] = interval
        return out

    per_step = [(step, of_step(bundle)) for step, bundle in reader.bundles(run, layer, kind)]
    return stack_columns(per_step, declared)


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
