"""What one log cost, by part: measured while it runs, stored with the step, shown in the tab.

Nobody can make analysis cheaper without seeing where its time goes. Each part of a log (the
probe pass, statistics and maps, similarity, perturbations, impact, user metrics, writing) is
timed in wall-clock and in CPU time of the thread that runs it, and expressed in
*forward-equivalents*: its wall time over that of the log's own probe pass, so a number read on a
laptop and on a GPU server means the same thing.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional

from tb_convviz.schema import format as fmt

# The parts of a log. The analyses that write records of their own are named by their kind.
PROBE_PASS = "probe pass"  # the part whose wall time is one forward-equivalent
LOADING = "loading the snapshot"
WEIGHTS_AND_MAPS = "statistics and maps"
SIMILARITY = "similarity"
WRITING = "writing"
# What to change in ConvViz(...) to make each part cheaper: the tab names it when analysis is
# slower than training (`/cost` sends it), and so does the callback's warning.
ADVICE = {
    fmt.KIND_IMPACT: 'a smaller exact-ablation budget, impact={"exact_budget": ...} (forward passes of the probe per log)',
    fmt.KIND_PERTURBATION: 'perturbations=False, fewer options (e.g. perturbations={"angles": 6}), or '
                           "response_filters=... (layers take turns)",
    WEIGHTS_AND_MAPS: "fewer or smaller activation maps: map_images=..., map_size=...",
    SIMILARITY: "fewer probe images for CKA and Gram matrices: similarity_images=... (0: off)",
    WRITING: "full kernels less often: kernels_every=...",
    fmt.KIND_FEATURE_VIS: 'a smaller budget or fewer steps, feature_vis={"budget": ..., "steps": ...}, or '
                          "feature_vis=False",
    fmt.KIND_METRICS: "your own metrics (metrics=[...]): make them cheaper, or restrict them to fewer layers",
    PROBE_PASS: 'a smaller probe, or analysis_device="cuda"',
    LOADING: 'analysis_device="cuda" where the model trains on a GPU',
}
GENERAL_ADVICE = 'log less often (every_n_epochs=...), or analysis_device="cuda"'


@dataclass
class Part:
    wall_s: float = 0.0
    cpu_s: float = 0.0


@dataclass
class CostMeter:
    """Times the parts of one log, in the order they run. CPU time is the running thread's own
    (`time.thread_time`): in the background the training thread's work is not counted."""

    parts: dict[str, Part] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    started_cpu: float = field(default_factory=time.thread_time)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time the block as (a further share of) part `name`, also when it raises."""
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            found = self.parts.setdefault(name, Part())
            found.wall_s += time.perf_counter() - wall
            found.cpu_s += time.thread_time() - cpu

    def summary(self, since_last_log_s: Optional[float] = None) -> dict[str, Any]:
        """The cost as stored with the step: every part's wall and CPU seconds and forward-equivalents,
        their totals, the probe pass's seconds, the wall time since the meter started (`span_s`: what
        the parts leave unaccounted is the difference; `span_cpu_s` the same in CPU time, which a busy
        machine's scheduling does not stretch), and the training time since the previous
        log() (None for the first), against which the tab says when analysis is slower than training."""
        unit = self.parts[PROBE_PASS].wall_s if PROBE_PASS in self.parts else 0.0
        parts = {
            name: {"wall_s": p.wall_s, "cpu_s": p.cpu_s, "forward_equivalents": p.wall_s / unit if unit > 0 else None}
            for name, p in self.parts.items()
        }
        wall = sum(p.wall_s for p in self.parts.values())
        return {
            "parts": parts,
            "wall_s": wall,
            "cpu_s": sum(p.cpu_s for p in self.parts.values()),
            "forward_s": unit or None,
            "forward_equivalents": wall / unit if unit > 0 else None,
            "span_s": time.perf_counter() - self.started,
            "span_cpu_s": time.thread_time() - self.started_cpu,
            "since_last_log_s": since_last_log_s,
        }


def cost_line(cost: Mapping[str, Any], top: int = 4) -> str:
    """One line for people: "this log: 97 s — impact 61 s (63%), perturbation 22 s (23%), …"
    (the tab writes the same line: frontend/costline.js)."""
    total = cost["wall_s"]
    ranked = sorted(cost["parts"].items(), key=lambda kv: (-kv[1]["wall_s"], kv[0]))
    shown = [f"{name} {_seconds(p['wall_s'])} ({_share(p['wall_s'] / total if total > 0 else 0.0)})" for name, p in ranked[:top]]
    more = ", …" if len(ranked) > top else ""
    return f"this log: {_seconds(total)} — " + ", ".join(shown) + more


def _seconds(s: float) -> str:
    if s >= 10:
        return f"{s:.0f} s"
    if s >= 0.1:
        return f"{s:.1f} s"
    if s >= 0.00995:
        return f"{s * 1000:.0f} ms"
    if s >= 0.00005:
        return f"{s * 1000:.1f} ms"
    return "<0.1 ms" if s > 0 else "0 ms"


def _share(share: float) -> str:
    percent = round(share * 100)
    return "<1%" if percent == 0 and share > 0 else f"{percent}%"
