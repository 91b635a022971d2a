"""A layer's filter table: every per-filter number its records hold, as declared columns.

The one place a record becomes columns: `logs.filter_table`, `/table`, the filter detail's
column history and every CSV export read through `record_columns`, so a number is the same
wherever it is shown.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz.schema.columns import Column, ci_bounds, columns_of, with_companion

# Record kinds that hold per-filter columns, in the order their columns are tabled.
TABLE_KINDS = (fmt.KIND_IMPACT, fmt.KIND_FILTERS, fmt.KIND_PERTURBATION, fmt.KIND_METRICS)


@dataclass(frozen=True)
class TableColumn:
    """One column's values at one step: `values` (F,), `interval` (F, 2) or None, and the step of
    the record they come from (a layer's last record of that kind at or before the step asked)."""

    column: Column
    values: np.ndarray
    interval: Optional[np.ndarray]
    record_step: int

    def declaration(self) -> dict:
        return {**self.column.declaration(), "record_step": self.record_step}


def record_columns(kind: str, bundle: fmt.Bundle, labels: Optional[np.ndarray], filters: int) -> list[tuple[Column, np.ndarray, Optional[np.ndarray]]]:
    """(declaration, values (F,), interval (F, 2) or None) of every column a record holds: what
    its declarations name and its arrays have, at one value per filter (a curve by its mean when
    declared so; impact's flip counts and top-example summary rebuilt as `impact_arrays` does)."""
    if kind == fmt.KIND_METRICS:
        declared = records.metric_columns(bundle)
        arrays = {c.name: bundle.array(c.name) for c in declared}
    else:
        arrays = records.impact_arrays(bundle, labels) if kind == fmt.KIND_IMPACT else None
        names = list(arrays) if arrays is not None else bundle.names()
        declared = [with_companion(c, names) for c in columns_of(kind, names)]
        if arrays is None:
            wanted = {n for c in declared for n in (c.name, c.ci) if n}
            arrays = {n: bundle.array(n) for n in wanted}
    exact = np.asarray(arrays[records.IMPACT_EXACT]).astype(bool) if records.IMPACT_EXACT in arrays else None
    out = []
    for column in declared:
        values = np.asarray(arrays[column.name])
        if column.reduce == "mean" and values.ndim == 2:
            values = values.astype(np.float32).mean(axis=1)
        if column.exact_only and exact is not None and exact.shape == values.shape:
            values = np.where(exact, values.astype(np.float32), np.float32(np.nan))
        if values.shape != (filters,):
            continue  # not one value per filter: a record from another layout
        interval = np.asarray(arrays[column.ci]) if column.ci else None
        out.append((column, values, interval if interval is not None and interval.shape == (filters, 2) else None))
    return out


def table_csv(table: Iterable[TableColumn], filters: int) -> str:
    """One row per filter, one column per table column (its interval as `<name>_lo`, `<name>_hi`
    right after it), raw numbers: NaN an empty cell, flags and counts as integers."""
    headers: list[str] = ["filter"]
    cells: list[np.ndarray] = []
    for entry in table:
        headers.append(entry.column.name)
        cells.append(entry.values)
        if entry.interval is not None:
            headers.extend(ci_bounds(entry.column.name))
            cells.extend((entry.interval[:, 0], entry.interval[:, 1]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    for f in range(filters):
        writer.writerow([f, *(number_cell(c[f]) for c in cells)])
    return out.getvalue()


def number_cell(value: np.generic) -> str:
    """A CSV cell: whole numbers as integers (a count stored as float to carry NaN reads "4", as
    the tab writes it), other floats by their shortest round-trip text, NaN empty."""
    if np.issubdtype(type(value), np.floating):
        if not np.isfinite(value):
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(int(value))
