"""What each route answers, built from the reader; no HTTP here."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from tensorboard import errors

from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz._version import __version__
from tb_convviz.analysis.compare import most_changed_first, weight_drift
from tb_convviz.analysis.embedding import available_methods
from tb_convviz.analysis.impact import class_table
from tb_convviz.analysis.significance import examples_needed
from tb_convviz.analysis.similarity import (
    SIGN_FLIPPED,
    CkaEstimate,
    aligned_weight_drift,
    debiased_cka_matrix,
    match_weights,
    paired_similarity,
)
from tb_convviz.write.cost import ADVICE, GENERAL_ADVICE
from tb_convviz.plugin.history import Columns, HistoryCache, read_columns
from tb_convviz.read.memo import Memo
from tb_convviz.read.reader import ConvVizReader, NotFound, cka_to_last, newest_version
from tb_convviz.schema.columns import BUILTIN, counterfactual_columns_of
from tb_convviz.read.table import TABLE_KINDS


DETECTION_EFFECTS = (0.05, 0.1, 0.2, 0.5)  # |Δ| a user may want to detect: small to large
SHAPE_TEXTURE_BINS = 10
# What the CKA routes answer, in words the dashboard shows.
CKA_ESTIMATOR = "debiased linear CKA (unbiased HSIC), 95% jackknife interval over probe images"


def _floats(a: np.ndarray) -> list:
    """JSON-safe floats: NaN and infinities become null rather than invalid JSON."""
    flat = np.asarray(a, np.float64).ravel()
    out = flat.tolist()
    for i in np.flatnonzero(~np.isfinite(flat)):
        out[i] = None
    return out


def _stats(bundle: fmt.Bundle, index: Optional[int] = None) -> dict[str, Any]:
    out = {}
    for name in records.filter_stat_names(bundle):
        values = bundle.array(name, index)
        out[name] = _floats(values) if index is None else _floats(values)[0]
    return out


def index_state(reader: ConvVizReader) -> tuple:
    """What `/index` answers from, cheaply (TensorBoard's listings and series are cached): the
    runs' signatures, which versions wrote them, and how many problems are known."""
    names = reader.runs()
    reader.read_runs(names)
    origins = tuple(sorted((run, tuple(sorted(found, key=repr))) for run, found in reader.origins().items()))
    return tuple((run, reader.signature(run)) for run in names), origins, len(reader.problems.listed())


def index(reader: ConvVizReader, answers: Memo) -> dict:
    """Runs → layers (facts and logged steps) → probe summary; which tb_convviz serves and which
    wrote each run. A run's entry is kept in `answers` under the run's signature: the tab asks
    this every few seconds, and a sweep of 20 runs × 50 epochs took ~0.5 s to list anew."""
    origins = reader.origins()
    names = reader.runs()
    reader.read_runs(names)
    runs = []
    for run in names:
        entry = answers.get_or_compute(("index", run, reader.signature(run)), lambda: _run_entry(reader, run))
        runs.append({**entry, "writer": newest_version(w for _, w in origins.get(run, ()))})
    return {
        "runs": runs,
        "version": __version__,
        "format_version": fmt.FORMAT_VERSION,
        "newer_logs": _newer_logs(origins),
        "names": records.record_names(),
        "embedding_methods": list(available_methods()),
        "columns": [c.declaration() for c in BUILTIN],
        # Listed after the runs were read, so that what reading them met is in it.
        "problems": reader.problems.listed(),
    }


def _run_entry(reader: ConvVizReader, run: str) -> dict:
    """One run of `/index`, but the version that wrote it."""
    layers = []
    for layer in reader.layers(run):
        kinds = reader.kinds(run, layer)
        try:
            entry = {
                "name": layer,
                "info": reader.head(run, layer, fmt.KIND_FILTERS).meta["info"],
                "steps": reader.steps(run, layer),
                "kernel_steps": reader.steps(run, layer, fmt.KIND_KERNELS) if fmt.KIND_KERNELS in kinds else [],
                "kinds": kinds,
            }
        except NotFound:
            continue  # no whole step of this layer yet: it shows up once its first step is written
        layers.append(entry)
    probe = None
    try:
        run_record = reader.head(run, fmt.RUN_LAYER, fmt.KIND_RUN)
        if "images" in run_record.shapes:
            shape = list(run_record.shapes["images"])
            probe = {"n": shape[0], "shape": shape, "has_labels": "labels" in run_record.shapes}
    except NotFound:
        pass  # not loaded yet (TensorBoard reads event files lazily): the probe shows up later
    return {"run": run, "layers": layers, "probe": probe, "columns": _run_columns(reader, run, layers),
            "shape_texture": _logs_shape_texture(reader, run, layers)}


def _newer_logs(origins: dict[str, set[tuple[int, Optional[str]]]]) -> list[dict]:
    """Runs holding records of a format newer than this reader's (each also among the problems):
    the newest such format and the newest version that wrote it, so the tab can say what to install."""
    out = []
    for run, found in sorted(origins.items()):
        newer = [(version, writer) for version, writer in found if version > fmt.FORMAT_VERSION]
        if newer:
            out.append({"run": run, "format_version": max(v for v, _ in newer), "writer": newest_version(w for _, w in newer)})
    return out


def _logs_shape_texture(reader: ConvVizReader, run: str, layers: list[dict]) -> bool:
    """Whether the run logged shape–texture responses (its first responding layer's last record
    holds them; they are logged for every responding layer or none), so the tab asks
    `/shape_texture` only of a run that can answer it."""
    holding = [entry["name"] for entry in layers if fmt.KIND_PERTURBATION in entry["kinds"]]
    if not holding:
        return False
    try:
        record = reader.bundle(run, holding[0], fmt.KIND_PERTURBATION, reader.steps(run, holding[0], fmt.KIND_PERTURBATION)[-1])
    except NotFound:
        return False
    return fmt.SHAPE_TEXTURE_INDEX in record


def _run_columns(reader: ConvVizReader, run: str, layers: list[dict]) -> list[dict]:
    """The declared columns a run's records can hold: the built-in ones of the kinds it logged, its
    counterfactuals' and the user metrics its last records declare (a layer's `/table` says exactly)."""
    kinds = {k for entry in layers for k in entry["kinds"]}
    out = [c.declaration() for c in BUILTIN if c.kind in kinds]
    for kind in (fmt.KIND_PERTURBATION, fmt.KIND_METRICS):
        holding = [entry["name"] for entry in layers if kind in entry["kinds"]]
        if not holding:
            continue
        try:
            record = reader.bundle(run, holding[0], kind, reader.steps(run, holding[0], kind)[-1])
            found = records.metric_columns(record) if kind == fmt.KIND_METRICS else counterfactual_columns_of(record.names())
        except (NotFound, ValueError):
            continue  # unreadable: listed among the problems
        out.extend(c.declaration() for c in found)
    return out


def cost(reader: ConvVizReader, run: str) -> dict:
    """What each whole step's log cost, by part (null for steps logged before costs were kept)."""
    found = reader.costs(run)
    return {"run": run, "steps": [step for step, _ in found], "costs": [c for _, c in found],
            "advice": dict(ADVICE), "general_advice": GENERAL_ADVICE}


def table(reader: ConvVizReader, run: str, layer: str, step: int) -> dict:
    """Every per-filter column of a layer at `step`: declarations (with each one's record step)
    and values as wire arrays, interval companions (F, 2) beside them under their `ci` name."""
    columns, values = [], {}
    for entry in reader.table(run, layer, step):
        columns.append(entry.declaration())
        values[entry.column.name] = fmt.wire_array(entry.values)
        if entry.interval is not None:
            values[entry.column.ci] = fmt.wire_array(entry.interval)
    return {"run": run, "layer": layer, "step": step, "filters": reader.filter_count(run, layer), "columns": columns,
            "values": values, "scalars": [{**e, "value": _floats(np.asarray(e["value"]))[0]} for e in reader.layer_scalars(run, layer, step)]}


def layer(reader: ConvVizReader, run: str, layer: str, step: int) -> dict:
    """One layer at one step: per-filter stats and drift, kernel tiles, activation maps."""
    filters = reader.bundle(run, layer, fmt.KIND_FILTERS, step)
    out = {
        "run": run,
        "layer": layer,
        "step": step,
        "info": filters.meta["info"],
        "prev_step": filters.meta.get("prev_step"),
        "first_step": filters.meta.get("first_step"),
        # Wire arrays, not JSON number lists: 2048 filters × 11 statistics as JSON floats were most
        # of a layer answer's time; the dashboard decodes them once, on arrival.
        "stats": {name: filters.wire(name) for name in records.filter_stat_names(filters)},
        records.TILES: filters.wire(records.TILES),
        "maps": None,
        "map_images": [],
    }
    try:
        found = reader.footprint(run, layer, step)
        out["footprint"] = {k: (_floats(v) if isinstance(v, np.ndarray) else v) for k, v in found.items()}
    except NotFound:
        out["footprint"] = None
    try:
        maps = reader.bundle(run, layer, fmt.KIND_MAPS, step)
        out["maps"] = maps.wire("maps")
        out["map_images"] = maps.meta.get("images", [])
    except NotFound:
        pass
    return out


def filter_detail(
    reader: ConvVizReader, run: str, layer: str, step: int, index: int, histories: Optional[HistoryCache] = None
) -> dict:
    """One filter: its input-channel slices, maps over the probe, and history over every step
    (from `histories` when given, else read from every step's records)."""
    out: dict[str, Any] = {"run": run, "layer": layer, "step": step, "filter": index}
    filters = reader.bundle(run, layer, fmt.KIND_FILTERS, step)
    out["stats"] = _stats(filters, index)
    try:
        kernel_step = reader.latest_at_or_before(run, layer, fmt.KIND_KERNELS, step)
        kernels = reader.bundle(run, layer, fmt.KIND_KERNELS, kernel_step)
        out["kernel_step"] = kernel_step
        out["slices"] = fmt.wire_array(kernels.array(records.KERNEL, index))
        effective = fmt.effective_kernel(kernels, index)
        out["effective"] = fmt.wire_array(effective) if effective is not None else None
    except NotFound:
        out["kernel_step"], out["slices"], out["effective"] = None, None, None
    try:
        maps = reader.bundle(run, layer, fmt.KIND_MAPS, step)
        out["maps"] = fmt.wire_array(maps.array("maps", (slice(None), index)))
        out["map_images"] = maps.meta.get("images", [])
    except NotFound:
        out["maps"], out["map_images"] = None, []
    out["per_class"] = _per_class(reader, run, layer, step, index)
    # Columns of every step, cached per layer by the plugin: another filter or step is a slice.
    columns = histories.columns if histories is not None else read_columns
    n_filters = reader.filter_count(run, layer)
    kinds = reader.kinds(run, layer)
    streams = {kind: columns(reader, run, layer, kind, n_filters) for kind in TABLE_KINDS if kind in kinds}
    out["column_history"] = {name: entry for stream in streams.values() for name, entry in _column_history(stream, index).items()}
    return out


def _column_history(columns: Columns, index: int) -> dict[str, dict]:
    """Filter `index`'s value of each declared column at every step of its stream:
    {name: {"steps", "values", "ci" ([lo, hi] per step, when the column has an interval)}}."""
    out = {}
    of_filter = columns.of_filter(index)
    for name, column in columns.declared.items():
        values = of_filter.get(name)
        if values is None or len(values) != len(columns.steps):
            continue  # missing from some steps' records: no one series to draw
        entry: dict[str, Any] = {"steps": list(columns.steps), "values": _floats(values)}
        interval = of_filter.get(column.ci) if column.ci else None
        if interval is not None and len(interval) == len(columns.steps):
            entry["ci"] = [_floats(pair) for pair in interval]
        out[name] = entry
    return out


def _per_class(reader: ConvVizReader, run: str, layer: str, step: int, index: int) -> Optional[dict]:
    """One filter's per-class changes at `step`, rebuilt from the impact record's sparse flips (a
    1000-class model costs what the classes present in the probe cost); None when the step has no
    impact record or the filter was not ablated exactly."""
    if fmt.KIND_IMPACT not in reader.kinds(run, layer) or step not in reader.steps(run, layer, fmt.KIND_IMPACT):
        return None
    record = reader.bundle(run, layer, fmt.KIND_IMPACT, step)
    if records.IMPACT_CLEAN_PRED not in record or not record.array(records.IMPACT_EXACT)[index]:
        return None
    arrays = {k: record.array(k) for k in (records.IMPACT_CLEAN_PRED, *records.IMPACT_FLIPS)}
    alpha = records.impact_alpha(record)
    table = class_table(reader.probe_labels(run), arrays, [index], alpha)
    return {
        "classes": table["classes"].tolist(),
        "class_support": table["class_support"].tolist(),
        "d_recall": _floats(table["d_recall"][0]),
        "d_precision": _floats(table["d_precision"][0]),
        "d_recall_ci": _floats(table["d_recall_ci"][0]),
        "detectable_d_recall": _floats(table["detectable_d_recall"]),
        "alpha": alpha,
    }


def analysis(reader: ConvVizReader, run: str, layer: str, step: int, kind: str) -> dict:
    """A layer's perturbation responses or impact table at `step`, every filter at once: the last
    record at or before it ("record_step"; a large model's layers take turns at responses)."""
    record_step = reader.latest_at_or_before(run, layer, kind, step)
    record = reader.bundle(run, layer, kind, record_step)
    # Wire arrays, as every answer sends them: the stored bytes where nothing is rebuilt.
    if kind == fmt.KIND_IMPACT:
        arrays = {name: fmt.wire_array(a) for name, a in records.impact_arrays(record, reader.probe_labels(run)).items()}
    else:
        arrays = {name: record.wire(name) for name in record.names()}
    out = {"run": run, "layer": layer, "step": step, "record_step": record_step, "kind": kind, "arrays": arrays}
    if kind == fmt.KIND_PERTURBATION:
        out["groups"] = {g: [k for k in keys if k in arrays] for g, keys in fmt.PERTURBATION_GROUPS.items()}
        out["counterfactuals"] = sorted(
            {k.split("/")[1] for k in arrays if k.startswith(fmt.COUNTERFACTUAL_PREFIX)}
        )
    if kind == fmt.KIND_IMPACT:
        alpha = records.impact_alpha(record)
        # What a larger probe would buy: images (per class, for Δrecall) to detect each effect.
        out["examples_needed"] = {str(effect): examples_needed(effect, alpha) for effect in DETECTION_EFFECTS}
    return out


def shape_texture(reader: ConvVizReader, run: str, step: int) -> dict:
    """Per layer, in model order, the distribution of its filters' shape–texture index at `step`
    (each layer's last responses at or before it: "steps"): where in the network shape (+1) or
    texture (−1) information is used."""
    layers, histograms, medians, counts, steps = [], [], [], [], []
    edges = np.linspace(-1, 1, SHAPE_TEXTURE_BINS + 1)
    for layer in reader.layers(run):
        try:
            record_step = reader.latest_at_or_before(run, layer, fmt.KIND_PERTURBATION, step)
        except NotFound:  # no responses of this layer (yet)
            continue
        record = reader.bundle(run, layer, fmt.KIND_PERTURBATION, record_step)
        if fmt.SHAPE_TEXTURE_INDEX not in record:
            continue
        index = record.array(fmt.SHAPE_TEXTURE_INDEX)
        index = index[np.isfinite(index)]
        layers.append(layer)
        steps.append(record_step)
        histograms.append(np.histogram(index, edges)[0].tolist())
        medians.append(float(np.median(index)) if index.size else None)
        counts.append(int(index.size))
    if not layers:
        raise errors.NotFoundError(
            f"run {run!r} has no shape–texture responses at step {step}: log with perturbations={{'shape_texture': True}}"
        )
    return {"run": run, "step": step, "layers": layers, "steps": steps, "edges": edges.tolist(), "histograms": histograms,
            "medians": medians, "filters": counts}


def _feature_vis_answer(found: dict) -> dict:
    return {
        "filters": np.asarray(found[records.FV_FILTERS]).tolist(),
        "images": fmt.wire_array(np.asarray(found[records.FV_IMAGES], np.float32)),
        "objective": _floats(found[records.FV_OBJECTIVE]),
        "probe_best": _floats(found[records.FV_PROBE_BEST]),
        "range": found[records.FV_RANGE],
    }


def feature_vis(reader: ConvVizReader, run: str, layer: str, step: int) -> dict:
    """The layer's feature visualisations from its last record at or before `step` ("record_step":
    the default budget visits layers in turns): filters, images (k, C, *size) in the model's input
    space, the objective each reaches, the probe's best, and the probe's range per channel."""
    record_step = reader.latest_at_or_before(run, layer, fmt.KIND_FEATURE_VIS, step)
    record = reader.bundle(run, layer, fmt.KIND_FEATURE_VIS, record_step)
    answer = _feature_vis_answer(records.feature_vis(record))
    answer["images"] = record.wire(records.FV_IMAGES)  # the stored 8-bit bytes: a quarter of float32's
    return {"run": run, "layer": layer, "step": step, "record_step": record_step, **answer}


def feature_vis_history(reader: ConvVizReader, run: str, layer: str, index: int) -> dict:
    """One filter's visualisation at every step that visualised it (a filmstrip over the epochs):
    steps, images (steps, C, *size), objective and probe_best per step; empty lists when never."""
    strip = reader.feature_vis_history(run, layer, index)
    out: dict[str, Any] = {"run": run, "layer": layer, "filter": index, "steps": [s["step"] for s in strip]}
    if not strip:
        return {**out, "images": None, "objective": [], "probe_best": [], "range": None}
    stacked = {records.FV_FILTERS: [index] * len(strip), records.FV_IMAGES: np.stack([s["image"] for s in strip]),
               records.FV_OBJECTIVE: [s["objective"] for s in strip], records.FV_PROBE_BEST: [s["probe_best"] for s in strip],
               records.FV_RANGE: strip[-1]["range"]}
    answer = _feature_vis_answer(stacked)
    del answer["filters"]
    return {**out, **answer}


def probe(reader: ConvVizReader, run: str) -> dict:
    """The probe inputs (for overlays) and their labels."""
    record = reader.bundle(run, fmt.RUN_LAYER, fmt.KIND_RUN)
    if "images" not in record:
        raise errors.NotFoundError(f"run {run!r} was logged without a probe")
    labels = record.array("labels").tolist() if "labels" in record else None
    return {"run": run, "images": record.wire("images"), "labels": labels}


def _weights_for(reader: ConvVizReader, run: str, layer: str, step: int) -> tuple[np.ndarray, str]:
    """Full kernels when that step kept them, else the tiles every step keeps."""
    kernel_steps = reader.steps(run, layer, fmt.KIND_KERNELS) if fmt.KIND_KERNELS in reader.kinds(run, layer) else []
    if step in kernel_steps:
        return reader.bundle(run, layer, fmt.KIND_KERNELS, step).array(records.KERNEL), "kernels"
    return reader.bundle(run, layer, fmt.KIND_FILTERS, step).array(records.TILES), records.TILES


def _feeding_layer(reader: ConvVizReader, run: str, layer: str, info: dict) -> Optional[str]:
    """The conv just before `layer` whose filters are its input channels, if the layer order shows one
    (a plain stack; in a residual block the input is a sum of several convs and none is returned)."""
    layers = reader.layers(run)
    at = layers.index(layer)
    if at == 0:
        return None
    before = layers[at - 1]
    channels = info["in_per_group"] * info["groups"]
    filters = reader.bundle(run, before, fmt.KIND_FILTERS).meta["info"]["filters"]
    return before if filters == channels else None


@dataclass(frozen=True)
class _Paired:
    """B's partner of each A filter and how alike each pair responds at the shown steps (None when
    paired by weights), with the pairing's own record: by what, at which steps, and its chance."""

    match: np.ndarray
    similarity: Optional[np.ndarray]
    basis: str
    summary: Optional[dict]


def _pairing(reader: ConvVizReader, layer: str, run_a: str, step_a: int, run_b: str, step_b: int,
             pair_step: Optional[int], weights: Callable[[], tuple[np.ndarray, np.ndarray]]) -> _Paired:
    """Pairs by what the filters do on the probe, solved once at `pair_step` and kept for every
    shown step, when both runs logged response profiles; else by weight cosine at the shown steps
    (valid for a first layer). `weights` reads (A's, B's) kernels only when they are needed."""
    if pair_step is None:
        return _Paired(match_weights(*weights()), None, "weights", None)
    try:
        found = reader.pairing(run_a, run_b, layer, pair_step, pair_step)
    except NotFound:
        return _Paired(match_weights(*weights()), None, "weights", None)
    except ValueError as e:  # different probes
        raise errors.InvalidArgumentError(str(e)) from e
    try:
        profile_a = reader.profile(run_a, layer, step_a)
        similarity, _ = paired_similarity(profile_a, reader.profile(run_b, layer, step_b), found.match)
    except NotFound:  # a shown step before the first profile: the pairs' similarity there is unknown
        similarity = np.full(found.match.shape, np.nan)
    summary = {
        "pair_step": pair_step,
        "profile_steps": [reader.profile_step(run_a, layer, pair_step), reader.profile_step(run_b, layer, pair_step)],
        "median_similarity": _floats(np.array([found.median_similarity]))[0],
        "chance": _floats(np.array([found.chance]))[0],
        "shuffles": found.shuffles,
        "images": found.images,
    }
    return _Paired(found.match, similarity, "activations", summary)


def compare(
    reader: ConvVizReader, layer: str, run_a: str, step_a: int, run_b: str, step_b: int, align: str,
    pair_step: Optional[int] = None,
) -> dict:
    """Per-filter drift of one layer from (run_a, step_a) to (run_b, step_b), most changed first.

    align "index": filter i with filter i; "match": each A filter with the B filter that responds
    most alike on the probe (optimal assignment on response profiles at `pair_step`, default the
    last step both runs have profiles for, so a pair is followed across steps; weight cosine
    without profiles); "aligned": matched too, and B's kernels read with their input channels put
    in A's order by the matching of the layer feeding this one, so a run that learned the same
    filters in another order shows zero drift. Drift of paired filters is sign-aware.
    """
    fa = reader.bundle(run_a, layer, fmt.KIND_FILTERS, step_a)
    fb = reader.bundle(run_b, layer, fmt.KIND_FILTERS, step_b)
    info_a = fa.meta["info"]
    n_a, n_b = info_a["filters"], fb.meta["info"]["filters"]
    if n_a != n_b or info_a["kernel_size"] != fb.meta["info"]["kernel_size"]:
        raise errors.InvalidArgumentError(
            f"layer {layer!r} differs between the runs: {n_a} filters of {info_a['kernel_size']} "
            f"vs {n_b} of {fb.meta['info']['kernel_size']}"
        )
    paired, aligned_by = None, None
    match = np.arange(n_a)
    if align != "index" and pair_step is None:
        try:
            pair_step = reader.pair_step(run_a, run_b, layer)
        except NotFound:
            pair_step = None  # no profiles: paired by weights at the shown steps
    elif align != "index":
        for run in (run_a, run_b):
            try:
                reader.profile_step(run, layer, pair_step)
            except NotFound as e:
                raise errors.NotFoundError(f"pair_step {pair_step}: {e}") from e
    if run_a == run_b and align == "index" and fb.meta.get("prev_step") == step_a and step_a != step_b:
        # Consecutive logs of one run: the callback measured this drift exactly on full weights.
        basis = "logged"
        drift = {key.removesuffix("_prev"): fb.array(key) for key in records.DRIFT_PREV}
    else:
        @functools.cache
        def weights() -> tuple[np.ndarray, np.ndarray, str]:
            """Both runs' kernels on one basis (full kernels where both steps kept them), read once."""
            wa, basis_a = _weights_for(reader, run_a, layer, step_a)
            wb, basis_b = _weights_for(reader, run_b, layer, step_b)
            both = "kernels" if basis_a == basis_b == "kernels" else records.TILES
            if both == records.TILES:
                wa, wb = fa.array(records.TILES), fb.array(records.TILES)
            return wa, wb, both

        prev_match = None
        if align != "index":
            # The pairing first: a request that finds every solve slot taken is refused (503)
            # before it decodes and diffs two layers of kernels, GIL-bound work every other route
            # of the server waits behind.
            paired = _pairing(reader, layer, run_a, step_a, run_b, step_b, pair_step, lambda: weights()[:2])
            match = paired.match
        wa, wb, basis = weights()
        if align != "index":
            feeding = _feeding_layer(reader, run_a, layer, info_a) if align == "aligned" and basis == "kernels" else None
            if feeding is not None:
                before = _pairing(reader, feeding, run_a, step_a, run_b, step_b, pair_step, lambda: tuple(
                    _weights_for(reader, r, feeding, s)[0] for r, s in ((run_a, step_a), (run_b, step_b))))
                prev_match = before.match
                aligned_by = {"layer": feeding, "basis": before.basis}
        drift = weight_drift(wa, wb) if align == "index" else aligned_weight_drift(wa, wb, match, prev_match)
    # Wire arrays, not JSON number lists (the dashboard decodes them on arrival): a 2048-filter
    # layer's metrics as JSON floats took most of the answer's time.
    metrics = {k: fmt.wire_array(v) for k, v in drift.items()}
    safe = np.where(match >= 0, match, 0)
    if records.ACT_MEAN in fa and records.ACT_MEAN in fb:
        metrics["act_mean_change"] = fmt.wire_array(np.where(match >= 0, fb.array(records.ACT_MEAN)[safe] - fa.array(records.ACT_MEAN), np.nan))
    similarity = paired.similarity if paired is not None else None
    if similarity is not None:
        metrics["match_similarity"] = fmt.wire_array(similarity)
    flipped = drift.get(SIGN_FLIPPED)
    return {
        "layer": layer,
        "a": {"run": run_a, "step": step_a},
        "b": {"run": run_b, "step": step_b},
        "filters": n_a,
        "basis": basis,
        "align": align,
        "match_basis": paired.basis if paired is not None else None,
        "pair_step": paired.summary["pair_step"] if paired is not None and paired.summary else None,
        "pairing": paired.summary if paired is not None else None,
        "median_similarity": _median(similarity) if similarity is not None else None,
        "sign_flipped": int(np.nansum(flipped)) if flipped is not None else None,
        "aligned_inputs": aligned_by,
        "match": match.tolist(),
        "metrics": metrics,
        "order": most_changed_first(np.asarray(drift["cosine_distance"], np.float64)).tolist(),
        "tiles_a": fa.wire(records.TILES),
        "tiles_b": fmt.wire_array(fb.array(records.TILES, safe)),
    }


def _median(values: np.ndarray) -> Optional[float]:
    """The median of the finite values, None when there are none."""
    found = values[np.isfinite(values)]
    return float(np.median(found)) if found.size else None


def _cka_answer(estimate: CkaEstimate) -> dict:
    """Debiased CKA with its 95% jackknife interval over probe images, flat, rows first."""
    return {"cka": _floats(estimate.value), "cka_lo": _floats(estimate.lo), "cka_hi": _floats(estimate.hi),
            "images": estimate.images, "estimator": CKA_ESTIMATOR}


def cka_layers(reader: ConvVizReader, run_a: str, step_a: int, run_b: str, step_b: int) -> dict:
    """Layer × layer debiased CKA between (run_a, step_a) and (run_b, step_b), over the same probe."""
    try:
        reader.check_same_probe(run_a, run_b)
    except ValueError as e:
        raise errors.InvalidArgumentError(str(e)) from e
    ga = reader.bundle(run_a, fmt.RUN_LAYER, fmt.KIND_GRAM, step_a)
    gb = reader.bundle(run_b, fmt.RUN_LAYER, fmt.KIND_GRAM, step_b)
    layers_a = [l for l in reader.layers(run_a) if records.GRAM_PREFIX + l in ga]
    layers_b = [l for l in reader.layers(run_b) if records.GRAM_PREFIX + l in gb]
    if not layers_a or not layers_b:
        raise errors.NotFoundError(f"no Gram matrices at steps {step_a} of {run_a!r} and {step_b} of {run_b!r}")
    estimate = debiased_cka_matrix([records.gram(ga, l) for l in layers_a], [records.gram(gb, l) for l in layers_b])
    return {"a": {"run": run_a, "step": step_a, "layers": layers_a}, "b": {"run": run_b, "step": step_b, "layers": layers_b},
            **_cka_answer(estimate)}


def _gram_series(reader: ConvVizReader, run: str) -> list[tuple[int, fmt.Bundle]]:
    return reader.bundles(run, fmt.RUN_LAYER, fmt.KIND_GRAM)


def cka_epochs(reader: ConvVizReader, run: str, layer: str) -> dict:
    """Step × step debiased CKA of one layer with itself: when did its representation stop changing?"""
    series = [(s, b) for s, b in _gram_series(reader, run) if records.GRAM_PREFIX + layer in b]
    if not series:
        raise errors.NotFoundError(f"layer {layer!r} of run {run!r} has no Gram records (similarity_images=0?)")
    estimate = debiased_cka_matrix([records.gram(b, layer) for _, b in series])
    return {"run": run, "layer": layer, "steps": [s for s, _ in series], **_cka_answer(estimate)}


def cka_to_final(reader: ConvVizReader, run: str) -> dict:
    """Per layer, debiased CKA of each step with the last step: which layers settle first (Raghu
    et al. 2017); a step without the layer's Gram is null."""
    series = _gram_series(reader, run)
    if not series:
        raise errors.NotFoundError(f"run {run!r} has no Gram records (similarity_images=0?)")
    steps = [s for s, _ in series]
    found = cka_to_last(series, reader.layers(run))
    value, lo, hi = ({layer: _floats(getattr(f, part)) for layer, f in found.items()} for part in ("value", "lo", "hi"))
    images = next(reversed(found.values())).images if found else 0
    return {"run": run, "steps": steps, "final_step": steps[-1], "layers": list(value), "cka": value, "cka_lo": lo,
            "cka_hi": hi, "images": images, "estimator": CKA_ESTIMATOR}


def embedding(reader: ConvVizReader, run: str, layer: str, method: str) -> dict:
    """Every step's 2-D map of the layer's filters from their response profiles, each aligned to the
    one before, so the tab's slider moves points instead of redrawing a new map; for PCA also each
    axis' share of the profiles' variance per step, for the axis labels."""
    variance = None
    try:
        if method == "pca":
            steps, trail, shares = reader.embedding_trail_with_variance(run, layer)
            variance = fmt.wire_array(shares)
        else:
            steps, trail = reader.embedding_trail(run, layer, method)
    except ImportError as e:
        raise errors.InvalidArgumentError(str(e)) from e
    return {"run": run, "layer": layer, "method": method, "steps": steps, "points": fmt.wire_array(trail),
            "variance_share": variance}
