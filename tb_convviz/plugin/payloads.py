"""What each route answers, built from the reader; no HTTP here."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from tensorboard import errors

from tb_convviz import format as fmt
from tb_convviz import records
from tb_convviz._version import __version__
from tb_convviz.analysis.compare import most_changed_first, weight_drift
from tb_convviz.analysis.impact import class_table
from tb_convviz.analysis.significance import examples_needed
from tb_convviz.analysis.similarity import aligned_weight_drift, cka_matrix, linear_cka, match_weights
from tb_convviz.plugin.history import Columns, HistoryCache, read_columns
from tb_convviz.reader import ConvVizReader, NotFound, newest_version
from tb_convviz.schema import BUILTIN
from tb_convviz.table import TABLE_KINDS


DETECTION_EFFECTS = (0.05, 0.1, 0.2, 0.5)  # |Δ| a user may want to detect: small to large
SHAPE_TEXTURE_BINS = 10


def _floats(a: np.ndarray) -> list:
    """JSON-safe floats: NaN and infinities become null rather than invalid JSON."""
    flat = np.asarray(a, np.float64).ravel()
    out = flat.tolist()
    for i in np.flatnonzero(~np.isfinite(flat)):
        out[i] = None
    return out


def _stats(bundle: fmt.Bundle, index: Optional[int] = None) -> dict[str, Any]:
    out = {}
    for name in bundle.names():
        if name != records.TILES:
            values = bundle.array(name, index)
            out[name] = _floats(values) if index is None else _floats(values)[0]
    return out


def index(reader: ConvVizReader) -> dict:
    """Runs → layers (facts and logged steps) → probe summary; which tb_convviz serves and which wrote each run."""
    origins = reader.origins()
    runs = []
    for run in reader.runs():
        layers = []
        for layer in reader.layers(run):
            kinds = reader.kinds(run, layer)
            try:
                entry = {
                    "name": layer,
                    "info": reader.bundle(run, layer, fmt.KIND_FILTERS).meta["info"],
                    "steps": reader.steps(run, layer),
                    "kernel_steps": reader.steps(run, layer, fmt.KIND_KERNELS) if fmt.KIND_KERNELS in kinds else [],
                    "kinds": kinds,
                }
            except NotFound:
                continue  # no whole step of this layer yet: it shows up once its first step is written
            layers.append(entry)
        probe = None
        try:
            run_record = reader.bundle(run, fmt.RUN_LAYER, fmt.KIND_RUN)
            if "images" in run_record:
                shape = list(run_record.shape("images"))
                probe = {"n": shape[0], "shape": shape, "has_labels": "labels" in run_record}
        except NotFound:
            pass  # not loaded yet (TensorBoard reads event files lazily): the probe shows up later
        runs.append({"run": run, "layers": layers, "probe": probe, "columns": _run_columns(reader, run, layers),
                     "writer": newest_version(w for _, w in origins.get(run, ()))})
    return {
        "runs": runs,
        "version": __version__,
        "format_version": fmt.FORMAT_VERSION,
        "newer_logs": _newer_logs(origins),
        "names": records.record_names(),
        "columns": [c.declaration() for c in BUILTIN],
        # Listed after the runs were read, so that what reading them met is in it.
        "problems": reader.problems.listed(),
    }


def _newer_logs(origins: dict[str, set[tuple[int, Optional[str]]]]) -> list[dict]:
    """Runs holding records of a format newer than this reader's (each also among the problems):
    the newest such format and the newest version that wrote it, so the tab can say what to install."""
    out = []
    for run, found in sorted(origins.items()):
        newer = [(version, writer) for version, writer in found if version > fmt.FORMAT_VERSION]
        if newer:
            out.append({"run": run, "format_version": max(v for v, _ in newer), "writer": newest_version(w for _, w in newer)})
    return out


def _run_columns(reader: ConvVizReader, run: str, layers: list[dict]) -> list[dict]:
    """The declared columns a run's records can hold: the built-in ones of the kinds it logged,
    and the user metrics its last metrics record declares (a layer's `/table` says exactly)."""
    kinds = {k for entry in layers for k in entry["kinds"]}
    out = [c.declaration() for c in BUILTIN if c.kind in kinds]
    with_metrics = [entry["name"] for entry in layers if fmt.KIND_METRICS in entry["kinds"]]
    if with_metrics:
        try:
            record = reader.bundle(run, with_metrics[0], fmt.KIND_METRICS, reader.steps(run, with_metrics[0], fmt.KIND_METRICS)[-1])
            out.extend(c.declaration() for c in records.metric_columns(record))
        except (NotFound, ValueError):
            pass  # unreadable: listed among the problems
    return out


def cost(reader: ConvVizReader, run: str) -> dict:
    """What each whole step's log cost, by part (null for steps logged before costs were kept)."""
    found = reader.costs(run)
    return {"run": run, "steps": [step for step, _ in found], "costs": [c for _, c in found]}


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
            "values": values}


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
        "stats": {name: filters.wire(name) for name in filters.names() if name != records.TILES},
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


def _plain(arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    """Small analysis arrays as {name: {"shape", "values"}} (values flat, row-major, NaN → null)."""
    return {name: {"shape": list(a.shape), "values": _floats(a)} for name, a in arrays.items()}


def analysis(reader: ConvVizReader, run: str, layer: str, step: int, kind: str) -> dict:
    """A layer's perturbation responses or impact table at `step`, every filter at once: the last
    record at or before it ("record_step"; a large model's layers take turns at responses)."""
    record_step = reader.latest_at_or_before(run, layer, kind, step)
    record = reader.bundle(run, layer, kind, record_step)
    if kind == fmt.KIND_IMPACT:
        arrays = _plain(records.impact_arrays(record, reader.probe_labels(run)))
    else:
        arrays = _plain({name: record.array(name) for name in record.names()})
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


def _pairing(reader: ConvVizReader, layer: str, run_a: str, step_a: int, run_b: str, step_b: int,
             wa: np.ndarray, wb: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray], str]:
    """(B's partner of each A filter, its |correlation| or None, basis): by what the filters do on the
    probe when both steps logged response profiles, else by weight cosine (valid for a first layer)."""
    try:
        match, similarity = reader.match(run_a, run_b, layer, step_a, step_b)
        return match, similarity, "activations"
    except NotFound:
        return match_weights(wa, wb), None, "weights"
    except ValueError as e:  # different probes
        raise errors.InvalidArgumentError(str(e)) from e


def compare(
    reader: ConvVizReader, layer: str, run_a: str, step_a: int, run_b: str, step_b: int, align: str
) -> dict:
    """Per-filter drift of one layer from (run_a, step_a) to (run_b, step_b), most changed first.

    align "index": filter i with filter i; "match": each A filter with the B filter that responds
    most alike on the probe (optimal assignment on response profiles; weight cosine without them);
    "aligned": matched too, and B's kernels read with their input channels put in A's order by the
    matching of the layer feeding this one, so a run that learned the same filters in another order
    shows zero drift.
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
    similarity, match_basis, aligned_by = None, None, None
    match = np.arange(n_a)
    if run_a == run_b and align == "index" and fb.meta.get("prev_step") == step_a and step_a != step_b:
        # Consecutive logs of one run: the callback measured this drift exactly on full weights.
        basis = "logged"
        drift = {key.removesuffix("_prev"): fb.array(key) for key in records.DRIFT_PREV}
    else:
        wa, basis_a = _weights_for(reader, run_a, layer, step_a)
        wb, basis_b = _weights_for(reader, run_b, layer, step_b)
        basis = "kernels" if basis_a == basis_b == "kernels" else records.TILES
        if basis == records.TILES:
            wa, wb = fa.array(records.TILES), fb.array(records.TILES)
        prev_match = None
        if align != "index":
            match, similarity, match_basis = _pairing(reader, layer, run_a, step_a, run_b, step_b, wa, wb)
            feeding = _feeding_layer(reader, run_a, layer, info_a) if align == "aligned" and basis == "kernels" else None
            if feeding is not None:
                prev_match, _, prev_basis = _pairing(reader, feeding, run_a, step_a, run_b, step_b, *(
                    _weights_for(reader, r, feeding, s)[0] for r, s in ((run_a, step_a), (run_b, step_b))))
                aligned_by = {"layer": feeding, "basis": prev_basis}
        drift = weight_drift(wa, wb) if align == "index" else aligned_weight_drift(wa, wb, match, prev_match)
    # Wire arrays, not JSON number lists (the dashboard decodes them on arrival): a 2048-filter
    # layer's metrics as JSON floats took most of the answer's time.
    metrics = {k: fmt.wire_array(v) for k, v in drift.items()}
    safe = np.where(match >= 0, match, 0)
    if records.ACT_MEAN in fa and records.ACT_MEAN in fb:
        metrics["act_mean_change"] = fmt.wire_array(np.where(match >= 0, fb.array(records.ACT_MEAN)[safe] - fa.array(records.ACT_MEAN), np.nan))
    if similarity is not None:
        metrics["match_similarity"] = fmt.wire_array(similarity)
    return {
        "layer": layer,
        "a": {"run": run_a, "step": step_a},
        "b": {"run": run_b, "step": step_b},
        "filters": n_a,
        "basis": basis,
        "align": align,
        "match_basis": match_basis,
        "aligned_inputs": aligned_by,
        "match": match.tolist(),
        "metrics": metrics,
        "order": most_changed_first(np.asarray(drift["cosine_distance"], np.float64)).tolist(),
        "tiles_a": fa.wire(records.TILES),
        "tiles_b": fmt.wire_array(fb.array(records.TILES, safe)),
    }


def cka_layers(reader: ConvVizReader, run_a: str, step_a: int, run_b: str, step_b: int) -> dict:
    """Layer × layer linear CKA between (run_a, step_a) and (run_b, step_b), over the same probe."""
    try:
        reader.check_same_probe(run_a, run_b)
    except ValueError as e:
        raise errors.InvalidArgumentError(str(e)) from e
    ga = reader.bundle(run_a, fmt.RUN_LAYER, fmt.KIND_GRAM, step_a)
    gb = reader.bundle(run_b, fmt.RUN_LAYER, fmt.KIND_GRAM, step_b)
    layers_a = [l for l in reader.layers(run_a) if records.GRAM_PREFIX + l in ga]
    layers_b = [l for l in reader.layers(run_b) if records.GRAM_PREFIX + l in gb]
    matrix = cka_matrix([records.gram(ga, l) for l in layers_a], [records.gram(gb, l) for l in layers_b])
    return {"a": {"run": run_a, "step": step_a, "layers": layers_a}, "b": {"run": run_b, "step": step_b, "layers": layers_b},
            "cka": _floats(matrix), "images": ga.meta["images"]}


def _gram_series(reader: ConvVizReader, run: str) -> list[tuple[int, fmt.Bundle]]:
    return reader.bundles(run, fmt.RUN_LAYER, fmt.KIND_GRAM)


def cka_epochs(reader: ConvVizReader, run: str, layer: str) -> dict:
    """Step × step linear CKA of one layer with itself: when did its representation stop changing?"""
    series = [(s, b) for s, b in _gram_series(reader, run) if records.GRAM_PREFIX + layer in b]
    if not series:
        raise errors.NotFoundError(f"layer {layer!r} of run {run!r} has no Gram records (similarity_images=0?)")
    matrix = cka_matrix([records.gram(b, layer) for _, b in series])
    return {"run": run, "layer": layer, "steps": [s for s, _ in series], "cka": _floats(matrix)}


def cka_to_final(reader: ConvVizReader, run: str) -> dict:
    """Per layer, CKA of each step with the last step: which layers settle first (Raghu et al. 2017)."""
    series = _gram_series(reader, run)
    if not series:
        raise errors.NotFoundError(f"run {run!r} has no Gram records (similarity_images=0?)")
    steps = [s for s, _ in series]
    final = series[-1][1]
    out = {}
    for layer in reader.layers(run):
        key = records.GRAM_PREFIX + layer
        if key in final:
            last = records.gram(final, layer)
            out[layer] = _floats(np.array([linear_cka(records.gram(b, layer), last) if key in b else np.nan for _, b in series]))
    return {"run": run, "steps": steps, "final_step": steps[-1], "layers": list(out), "cka": out}


def embedding(reader: ConvVizReader, run: str, layer: str, method: str) -> dict:
    """Every step's 2-D map of the layer's filters from their response profiles, each aligned to the
    one before, so the tab's slider moves points instead of redrawing a new map."""
    try:
        steps, trail = reader.embedding_trail(run, layer, method)
    except ImportError as e:
        raise errors.InvalidArgumentError(str(e)) from e
    return {"run": run, "layer": layer, "method": method, "steps": steps, "points": fmt.wire_array(trail)}
