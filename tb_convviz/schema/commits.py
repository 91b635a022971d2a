"""Which records of a run a reader shows: the commit rule, applied the same way by every reader.

A step is written as a *version*: its records, then its commit record, all under one wall time,
the version's stamp. A crash leaves a version without its commit; a rerun after `resume`, or a
second writer, adds another version of the same step. TensorBoard's two loaders keep different
parts of a step written twice (the Python one keeps both versions of a record when the step did
not go back, the Rust one only the record read last), so the rule relies on neither: a step
shows once a commit exists for it, and then only the records stamped like its latest commit.
What a crash left uncommitted never shows, and two versions never mix.

Logs from before stamps (no ``stamped`` in their plugin content) keep their old reading: a step
whose commit is there, or every step when the run has no commit at all.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Sequence, TypeVar

Datum = TypeVar("Datum")  # tensorboard.data.provider.BlobSequenceDatum: anything with .step and .wall_time

_last = 0.0
_lock = threading.Lock()


def new_stamp() -> float:
    """A wall time no earlier version in this process has used, so two versions of one step
    written within a clock tick still differ."""
    global _last
    with _lock:
        _last = max(time.time(), math.nextafter(_last, math.inf))
        return _last


def whole_records(series: Sequence[Datum], commits: Sequence[Datum], stamped: bool) -> list[Datum]:
    """One record per committed step, in step order: the one stamped like the step's latest commit.

    `series` is one stream's records as a loader holds them (a step may appear more than once),
    `commits` the run's commit records, `stamped` whether the stream was written under stamps.
    """
    if not stamped:
        if not commits:
            return list(series)
        committed = {c.step for c in commits}
        return [d for d in series if d.step in committed]
    latest: dict[int, float] = {}
    for c in commits:
        latest[c.step] = max(latest.get(c.step, -math.inf), c.wall_time)
    chosen = {d.step: d for d in series if latest.get(d.step) == d.wall_time}
    return [chosen[step] for step in sorted(chosen)]
