"""Per-filter tables as CSV, for spreadsheets and notebooks: what the tab's tables show, from Python."""
from __future__ import annotations

import csv
import io
from typing import Mapping

import numpy as np


def per_filter_csv(arrays: Mapping[str, np.ndarray], filters: int) -> str:
    """One row per filter, one column per per-filter array of `arrays`: (F,) arrays as they are,
    (F, k) arrays (intervals, tuning curves, per-class changes) as k columns "name[0]" …
    "name[k-1]"; layer scalars and sparse lists are left out. NaN is an empty cell."""
    columns: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.ndim == 1 and a.shape[0] == filters:
            columns[name] = a
        elif a.ndim == 2 and a.shape[0] == filters:
            columns.update({f"{name}[{j}]": a[:, j] for j in range(a.shape[1])})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["filter", *columns])
    for f in range(filters):
        writer.writerow([f, *(_cell(v[f]) for v in columns.values())])
    return out.getvalue()


def _cell(value: np.generic) -> str:
    if np.issubdtype(type(value), np.floating):
        return "" if not np.isfinite(value) else repr(float(value))
    return str(value.item() if hasattr(value, "item") else value)
