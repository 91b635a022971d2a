"""What goes inside each record: array names, encodings and metadata, owned in one place.

`format.py` says how a bundle is laid out in bytes; this module says which arrays a record of
each kind holds and how each is encoded. The callback's worker builds records only through the
`*_record` functions here, and the reader, the routes and (through the payloads) the dashboard
take their names from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from tb_convviz.schema import format as fmt
from tb_convviz.analysis.impact import DEFAULT_ALPHA, top_example_summary
from tb_convviz.schema.columns import Column, column_from_declaration

Encoded = tuple[str, np.ndarray, int]  # (encoding, array, leading axes quantised per group)

# -- names of the arrays inside records ------------------------------------------------------

TILES = "tiles"
KERNEL = "kernel"
BN_SCALE = "bn_scale"
EFFECTIVE_BIAS = "effective_bias"
BIAS = "bias"
MAPS = "maps"
PROBE_IMAGES = "images"
PROBE_LABELS = "labels"

# The layer's kernel footprint (analysis.footprint), computed where full kernels are logged: arrays,
# and scalars in the meta, of that step's filters record (small, so /layer does not read the whole
# kernels record for it); logs from before that kept it in the kernels record, which readers still read.
FOOTPRINT_ARRAYS = ("offset_energy", "ring_energy")
FOOTPRINT_META = "footprint"
FOOTPRINT_PREFIX = "footprint/"

# A kernels record stored as a change from an earlier one names it in its meta: {"step", "crc32"}.
KERNEL_REFERENCE = "reference"
# A change is written only when it is at most this share of the keyframe it replaces; a layer
# that moved more starts a new keyframe, which later changes are then taken from.
DELTA_SHARE = 0.8

# The Gram record holds one array per layer; a profile record one array.
GRAM_PREFIX = "gram/"
PROFILE = "profile"

# A filters record's flag of dead filters (the other statistics are numbers).
DEAD = "dead"
# Its mean activation over the probe, which run-vs-run comparison reads directly.
ACT_MEAN = "act_mean"

# Per-filter statistics of a filters record (f16s, one value per filter).
DRIFT_PREV = ("cosine_distance_prev", "norm_change_prev")
DRIFT_FIRST = "cosine_distance_first"

# Impact record: which filters were ablated exactly (the rest carry only the Taylor estimate).
IMPACT_EXACT = "exact"
# Sparse, exact description of every prediction an ablation changed: per-class tables are
# rebuilt from these on read, so a 1000-class model costs no more than a 10-class one.
IMPACT_CLEAN_PRED = "clean_pred"
IMPACT_ALPHA = "alpha"  # the significance level the record's flags and intervals were computed at
# The filters whose exact result checks the Taylor estimate without bias, and the two numbers compared.
IMPACT_SAMPLED = "sampled"
# Stored instead of the flag: the sampled filters' indices, and nothing for a whole layer (every
# filter exact is every filter a check), so a ResNet-50 epoch pays tens of bytes, not 26 KB.
IMPACT_SAMPLED_INDEX = "sampled_index"
IMPACT_SIGNIFICANT = "significant"  # the significance flag (Benjamini–Hochberg-adjusted exact test at the record's alpha)
IMPACT_P_ADJUSTED = "p_adjusted"  # that test's adjusted p-value
IMPACT_TAYLOR = "taylor_d_loss"
IMPACT_D_LOSS = "d_loss"
IMPACT_TAYLOR_SPEARMAN = "taylor_spearman"  # per record: ρ on that log's sample; readers pool several logs
IMPACT_FLIPS = ("flip_filter", "flip_image", "flip_pred")
# Arrays of an impact record that describe the top activating probe examples rather than impact.
TOP_EXAMPLE_PREFIX = fmt.TOP_EXAMPLE_PREFIX
TOP_EXAMPLE_INDEX = TOP_EXAMPLE_PREFIX + "index"
# What an impact analysis returns but its record leaves out, because readers rebuild it exactly
# (`impact_arrays`): the flip count of each filter from the sparse flips, and what the top examples
# say of a filter from their indices and the probe labels — ~33 bytes a filter, 0.9 MB a ResNet-50 epoch.
IMPACT_FLIP_COUNT = "flips"
IMPACT_DERIVED = (IMPACT_FLIP_COUNT, *(TOP_EXAMPLE_PREFIX + k for k in ("label", "class", "concentration", "flag")))
COUNTERFACTUAL_PREFIX = fmt.COUNTERFACTUAL_PREFIX


def record_names() -> dict[str, Any]:
    """The names the dashboard needs to read records, sent in the index payload so that no view
    parses a record name of its own."""
    return {
        "kinds": list(fmt.KINDS),
        "perturbation_groups": {g: list(keys) for g, keys in fmt.PERTURBATION_GROUPS.items()},
        "counterfactual_prefix": COUNTERFACTUAL_PREFIX,
        "top_example_prefix": TOP_EXAMPLE_PREFIX,
        "impact_exact": IMPACT_EXACT,
        "impact_significant": IMPACT_SIGNIFICANT,
        "impact_p_adjusted": IMPACT_P_ADJUSTED,
        "shape_texture_index": fmt.SHAPE_TEXTURE_INDEX,
        "feature_vis_kind": fmt.KIND_FEATURE_VIS,
    }


# -- encodings -----------------------------------------------------------------------------


def _exact_encoding(a: np.ndarray) -> Encoded:
    """Impact numbers are read one by one and compared across filters: float32, never 8-bit."""
    a = np.asarray(a)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        return fmt.integer_encoding(a)
    return "f32", a, 0


def _stat_encoding(name: str, a: np.ndarray) -> Encoded:
    """Per-filter statistics are read to three digits and ranked: f16s keeps that over eight decades
    below the layer's largest value (a frozen filter's drift next to a moving one's); `dead` is a flag."""
    return ("u8", np.asarray(a) != 0, 0) if name == DEAD else ("f16s", a, 0)


def _tile_encoding(tiles: np.ndarray) -> Encoded:
    """q8 per filter, unless a tile holds so few values (a 1×1 kernel: one) that its 8-byte scale
    would cost more than the values in float16; non-finite weights show as 0 either way."""
    per_filter = int(np.prod(tiles.shape[1:]))
    if per_filter > 4:
        return "q8", tiles, 1
    return "f16s", np.nan_to_num(tiles, nan=0.0, posinf=0.0, neginf=0.0), 0


# -- the records -----------------------------------------------------------------------------


def run_record(layers: list[str], images: Optional[np.ndarray], labels: Optional[np.ndarray]) -> bytes:
    """Per run, at its first log: layer order, the probe images and labels (for overlays)."""
    arrays: dict[str, Encoded] = {}
    if images is not None:
        arrays[PROBE_IMAGES] = ("q8", images, 1)
        if labels is not None:
            arrays[PROBE_LABELS] = ("i32", labels, 0)
    return fmt.encode_bundle(arrays, {"layers": list(layers)})


def filters_record(
    info: dict, prev_step: int, first_step: int, tiles: np.ndarray, stats: Mapping[str, np.ndarray],
    footprint: Optional[Mapping[str, Any]] = None,
) -> bytes:
    """Per layer and step: layer facts, kernel tiles and per-filter stats; at a step logging full
    kernels, the layer's kernel footprint too."""
    arrays: dict[str, Encoded] = {TILES: _tile_encoding(tiles)}
    arrays.update({k: _stat_encoding(k, v) for k, v in stats.items()})
    meta: dict[str, Any] = {"info": info, "prev_step": prev_step, "first_step": first_step}
    if footprint is not None:
        arrays.update({FOOTPRINT_PREFIX + k: ("f32", np.asarray(footprint[k]), 0) for k in FOOTPRINT_ARRAYS})
        meta[FOOTPRINT_META] = {k: v for k, v in footprint.items() if k not in FOOTPRINT_ARRAYS}
    return fmt.encode_bundle(arrays, meta)


def filter_stat_names(bundle: fmt.Bundle) -> list[str]:
    """The per-filter statistics of a filters record: its arrays but the kernel tiles and the
    layer's footprint (kept there at steps logging full kernels)."""
    return [n for n in bundle.names() if n != TILES and not n.startswith(FOOTPRINT_PREFIX)]


def maps_record(maps: np.ndarray, images: list[int], source_shape: list[int]) -> bytes:
    """Activation maps (images, filters, *spatial), q8 per image × filter."""
    return fmt.encode_bundle({MAPS: ("q8", maps, 2)}, {"images": images, "source_shape": source_shape})


@dataclass(frozen=True)
class Keyframe:
    """A kernels record whole in itself, which later kernels records of its layer may be stored as
    changes from. The writer keeps one per layer, and only once its step is committed, so that a
    change never names a record a reader cannot find."""

    step: int
    bundle: fmt.Bundle

    @classmethod
    def of(cls, step: int, record: bytes) -> Optional["Keyframe"]:
        """The record as a keyframe, or None when it is itself a change."""
        bundle = fmt.decode_bundle(record)
        return None if bundle.is_change(KERNEL) else cls(step, bundle)


def kernels_record(
    kernel: np.ndarray,
    bias: Optional[np.ndarray],
    batchnorm: Optional[str],
    bn_scale: Optional[np.ndarray],
    effective_bias: Optional[np.ndarray],
    keyframe: Optional[Keyframe] = None,
) -> bytes:
    """Full raw kernels (q8 per filter), the conv bias, and the following BatchNorm as one scale
    per filter (readers fold it in: `format.effective_kernel`).

    Given the layer's `keyframe`, the kernel is stored as its change from it (``q8d``, the same
    tolerance) when that is at most `DELTA_SHARE` of a keyframe's bytes: a layer that barely
    moved since then costs a fraction of a byte per weight instead of one."""
    meta: dict[str, Any] = {"batchnorm": batchnorm}
    arrays: dict[str, Encoded] = {KERNEL: ("q8", kernel, 1)}
    if keyframe is not None and keyframe.bundle.shape(KERNEL) == tuple(kernel.shape):
        delta = fmt.q8_delta(kernel, keyframe.bundle.array(KERNEL))
        if delta is not None and delta.nbytes <= DELTA_SHARE * (kernel.size + 8 * kernel.shape[0]):
            arrays[KERNEL] = ("q8d", delta, 1)
            meta[KERNEL_REFERENCE] = {"step": keyframe.step, "crc32": keyframe.bundle.checksum(KERNEL)}
    if bn_scale is not None and effective_bias is not None:
        arrays[BN_SCALE] = ("f32", bn_scale, 0)
        arrays[EFFECTIVE_BIAS] = ("f32", effective_bias, 0)
    if bias is not None:
        arrays[BIAS] = ("f32", bias, 0)
    return fmt.encode_bundle(arrays, meta)


def kernel_reference(bundle: fmt.Bundle) -> Optional[int]:
    """The step of the keyframe a kernels record is a change from; None for a keyframe."""
    found = bundle.meta.get(KERNEL_REFERENCE)
    changed = KERNEL in bundle and bundle.is_change(KERNEL)
    if found is None and not changed:
        return None
    if not changed or not isinstance(found, dict) or not isinstance(found.get("step"), int):
        raise ValueError("a kernels record's reference does not match how its kernel is stored")
    return found["step"]


def resolve_reference(bundle: fmt.Bundle, keyframe: fmt.Bundle) -> None:
    """Give a change record its keyframe; ValueError when that is not the record it was taken from
    (a step written twice, a log edited by hand)."""
    if keyframe.is_change(KERNEL) or keyframe.checksum(KERNEL) != bundle.meta[KERNEL_REFERENCE].get("crc32"):
        raise ValueError(f"its reference, the kernels at step {kernel_reference(bundle)}, is not the record it was stored against")
    bundle.reference = keyframe


def footprint(bundle: fmt.Bundle) -> Optional[dict[str, Any]]:
    """The footprint a filters record holds (or, in older logs, a kernels record); None without one."""
    if FOOTPRINT_META not in bundle.meta:
        return None
    out: dict[str, Any] = dict(bundle.meta[FOOTPRINT_META])
    out.update({k: bundle.array(FOOTPRINT_PREFIX + k) for k in FOOTPRINT_ARRAYS})
    return out


def analysis_record(kind: str, arrays: Mapping[str, np.ndarray]) -> bytes:
    """A perturbation or impact record from an analysis' per-layer arrays (an impact record
    without what `impact_arrays` rebuilds)."""
    if kind == fmt.KIND_IMPACT:
        kept = {k: _exact_encoding(v) for k, v in arrays.items() if k not in (*IMPACT_DERIVED, IMPACT_SAMPLED)}
        if IMPACT_SAMPLED in arrays and not np.asarray(arrays[IMPACT_EXACT]).all():
            kept[IMPACT_SAMPLED_INDEX] = fmt.integer_encoding(np.flatnonzero(arrays[IMPACT_SAMPLED]))
        return fmt.encode_bundle(kept, {})
    return fmt.encode_bundle({k: fmt.natural_encoding(v) for k, v in arrays.items()}, {})


def impact_arrays(bundle: fmt.Bundle, labels: Optional[np.ndarray]) -> dict[str, np.ndarray]:
    """Every array of an impact record, with what `analysis_record` left out rebuilt exactly:
    "flips" (F,) (−1 where not ablated), "sampled" (`impact_sampled`) and, given the probe labels,
    the top examples' labels, class, concentration and flag (analysis.impact.top_example_summary)."""
    out = {n: bundle.array(n) for n in bundle.names() if n != IMPACT_SAMPLED_INDEX}
    sampled = impact_sampled(bundle)
    if sampled is not None:
        out[IMPACT_SAMPLED] = sampled
    if IMPACT_FLIP_COUNT not in out and IMPACT_EXACT in out and IMPACT_FLIPS[0] in out:
        exact = out[IMPACT_EXACT].astype(bool)
        counts = np.bincount(out[IMPACT_FLIPS[0]].astype(np.int64), minlength=len(exact))[: len(exact)]
        out[IMPACT_FLIP_COUNT] = np.where(exact, counts, -1)
    if labels is not None and TOP_EXAMPLE_INDEX in out and TOP_EXAMPLE_PREFIX + "label" not in out:
        out.update(top_example_summary(out[TOP_EXAMPLE_INDEX], labels))
    return out


def impact_sampled(bundle: fmt.Bundle) -> Optional[np.ndarray]:
    """(F,) bool: the filters whose exact result checks the Taylor estimate without bias — every
    filter of a layer ablated whole, else the stored random sample; None for records from before
    samples were kept (a layer not ablated whole, without indices)."""
    if IMPACT_EXACT not in bundle:
        return None
    exact = bundle.array(IMPACT_EXACT).astype(bool)
    if IMPACT_SAMPLED_INDEX in bundle:
        sampled = np.zeros(len(exact), bool)
        sampled[bundle.array(IMPACT_SAMPLED_INDEX)] = True
        return sampled
    return exact.copy() if exact.all() else None


def gram_record(grams: Mapping[str, np.ndarray]) -> bytes:
    """Every layer's (N, N) Gram over the probe images, as float16 upper triangles scaled to ±1.

    Symmetric, so half is enough; float16 of the scaled entries moves linear CKA by ~1e-5 (its
    errors are independent across the N² terms of each trace), and keeps a ResNet-18's 20 layers
    at N = 64 under 90 KB per epoch.
    """
    arrays: dict[str, Encoded] = {}
    scales: dict[str, float] = {}
    images = 0
    for layer, gram in grams.items():
        images = gram.shape[0]
        upper = gram[np.triu_indices(images)]
        scale = float(np.abs(upper).max()) if upper.size else 0.0
        scales[layer] = scale
        arrays[GRAM_PREFIX + layer] = ("f16", upper / scale if scale > 0 else upper, 0)
    return fmt.encode_bundle(arrays, {"images": images, "scales": scales})


def gram(bundle: fmt.Bundle, layer: str) -> np.ndarray:
    """One layer's (N, N) float64 Gram from a gram record (`gram_record`'s inverse)."""
    n = int(bundle.meta["images"])
    full = np.zeros((n, n))
    rows, cols = np.triu_indices(n)
    full[rows, cols] = bundle.array(GRAM_PREFIX + layer).astype(np.float64) * bundle.meta["scales"][layer]
    full[cols, rows] = full[rows, cols]
    return full


def profile_record(profile: np.ndarray) -> bytes:
    """(filters, images) mean activation of each filter on each probe image, q8 per filter:
    correlations, which matching uses, do not change under a per-filter affine map."""
    return fmt.encode_bundle({PROFILE: ("q8", profile, 1)}, {})


def impact_alpha(bundle: fmt.Bundle) -> float:
    """The significance level an impact record was finished at (logs from before it was stored: the default)."""
    return float(bundle.array(IMPACT_ALPHA)) if IMPACT_ALPHA in bundle else DEFAULT_ALPHA


METRIC_COLUMNS = "columns"  # a metrics record's meta: {name: declaration} of each array it holds


def metrics_record(columns: Mapping[str, tuple[Column, np.ndarray]]) -> bytes:
    """A layer's user-metric columns at one step, float32 (read back exactly), each declared in the
    record itself so that any reader can title and explain it."""
    arrays = {name: ("f32", values, 0) for name, (_, values) in columns.items()}
    return fmt.encode_bundle(arrays, {METRIC_COLUMNS: {name: col.declaration() for name, (col, _) in columns.items()}})


def metric_columns(bundle: fmt.Bundle) -> list[Column]:
    """The declarations a metrics record carries (only those with an array); ValueError when malformed."""
    declared = bundle.meta.get(METRIC_COLUMNS, {})
    if not isinstance(declared, dict):
        raise ValueError("the metrics record's column declarations are not an object")
    return [column_from_declaration({**decl, "name": name} if isinstance(decl, dict) else decl, fmt.KIND_METRICS)
            for name, decl in declared.items() if name in bundle]


# A feature_vis record: which filters it visualised, their images (k, C, *size) in the model's input
# space, the objective each image reaches and the best any probe image reaches; its meta holds the
# probe's per-channel range (for display) and the optimisation's settings.
FV_FILTERS = "filters"
FV_IMAGES = "images"
FV_OBJECTIVE = "objective"
FV_PROBE_BEST = "probe_best"
FV_ARRAYS = (FV_FILTERS, FV_IMAGES, FV_OBJECTIVE, FV_PROBE_BEST)
FV_RANGE = "range"


def feature_vis_record(arrays: Mapping[str, np.ndarray], lo: np.ndarray, hi: np.ndarray, settings: Mapping[str, Any]) -> bytes:
    """One layer's visualisations at one step: images q8 per image (within (max − min) / 510 of each
    image's own range), objectives float32 (compared across epochs and with the probe's best)."""
    encoded: dict[str, Encoded] = {
        FV_FILTERS: fmt.integer_encoding(arrays[FV_FILTERS]),
        FV_IMAGES: ("q8", np.asarray(arrays[FV_IMAGES], np.float32), 1),
        FV_OBJECTIVE: ("f32", np.asarray(arrays[FV_OBJECTIVE], np.float32), 0),
        FV_PROBE_BEST: ("f32", np.asarray(arrays[FV_PROBE_BEST], np.float32), 0),
    }
    meta = {FV_RANGE: {"lo": [float(v) for v in lo], "hi": [float(v) for v in hi]}, "settings": dict(settings)}
    return fmt.encode_bundle(encoded, meta)


def feature_vis(bundle: fmt.Bundle, select: Any = None) -> dict[str, Any]:
    """A feature_vis record's arrays by name (`FV_ARRAYS`), `select` picking rows (positions in
    its filter list), and "range" ({"lo", "hi"} per channel)."""
    out: dict[str, Any] = {name: bundle.array(name, select) for name in FV_ARRAYS}
    out[FV_RANGE] = bundle.meta.get(FV_RANGE)
    return out


COST = "cost"  # a commit record's meta: what the step's log cost, by part (`cost.CostMeter.summary`)


def commit_record(records: int, cost: Optional[Mapping[str, Any]] = None) -> bytes:
    """Written after every other record of a step: readers show a step only once this is there,
    so a step still being written never shows half its layers. It carries what the log cost."""
    return fmt.encode_bundle({}, {"records": records, COST: dict(cost) if cost is not None else None})
