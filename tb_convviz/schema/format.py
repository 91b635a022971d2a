"""The on-disk format of convviz summaries, defined once for the writer and every reader.

A record is a TensorBoard tensor summary under the plugin name ``convviz``:

* tag ``<layer>/<kind>`` (``_run/run`` for run-level data), one record per logged step; since format
  2 a layer's records of a step travel in one event, a *group* (`schema.groups`), and only the
  commit record keeps a tag of its own;
* plugin content: JSON ``{"version": FORMAT_VERSION, "kind": kind, "stamped": true, "writer": "0.2.0"}``
  (a group's kind is ``group``, with ``"kinds": [...]``, the kinds it holds);
  ``stamped`` says the record follows the commit rule of `tb_convviz.schema.commits` (all of a step's
  records and its commit share one wall time; logs without it count every step as whole);
  ``writer`` is the tb_convviz version that wrote it (logs from before it was recorded lack it);
* value: a scalar DT_STRING tensor holding a *bundle*: named arrays plus JSON metadata.

Bundle bytes: ``MAGIC``, a little-endian uint32 header length, the JSON header
``{"meta": {...}, "arrays": {name: {"enc", "shape", "offset", "nbytes", "groups"}}}``
and the array payloads. Arrays are encoded one of:

* ``q8``: per-group affine uint8. The leading ``groups`` axes (e.g. filter, or image×filter)
  each get their own float32 ``lo`` and ``step``; a value decodes as ``lo + step * q``.
  Tolerance: ``|x - decoded| <= step / 2 = (max - min) / 510`` within each group.
* ``f16s``: float16 of ``x / scale``, ``scale`` (a power of two, in the array's header entry)
  putting the largest finite |x| just under 2^15: relative error ≤ 2^-11 for every
  |x| ≥ max|x|·2^-29, so per-filter scalars spanning eight decades (drift of a frozen filter
  next to a moving one) keep three significant digits at half the bytes of float32.
* ``q8d``: a change from another step's ``q8`` array of the same name and shape (the record's
  *reference*, named in its meta; see `records.kernels_record`): per group a float32 ``step``, then
  zlib-compressed int8 ``q``; a value decodes as ``reference + step * q``, ``step`` being the one
  ``q8`` would use for this array, so the tolerance is q8's. A kernel that barely moved since its
  reference has small ``q``, which compresses to a fraction of a byte per weight.
* ``f16``, ``f32``, ``i16``, ``i32``, ``u8``: raw little-endian arrays (``i16`` reads back as int32).
"""
from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from tb_convviz._version import __version__
from tb_convviz.schema.groups import KIND_GROUP

PLUGIN_NAME = "convviz"
FORMAT_VERSION = 2  # 2: a layer's records of a step grouped in one event (`schema.groups`); 1 is read too
MAGIC = b"CVZ1"

# Record kinds. Later analyses add kinds here; readers skip kinds they do not know.
KIND_RUN = "run"  # per run, at its first log: layer order, probe inputs and labels
KIND_FILTERS = "filters"  # per layer and step: layer facts, per-filter stats and drift, kernel tiles
KIND_MAPS = "maps"  # per layer and step: downsampled activation maps on the probe
KIND_KERNELS = "kernels"  # per layer, every few steps: full raw and BN-folded kernels
KIND_PERTURBATION = "perturbation"  # per layer: responses to rotation, noise, adversarial, counterfactuals
KIND_IMPACT = "impact"  # per layer: ablation / Taylor impact, selectivity, top examples
KIND_GRAM = "gram"  # per step, under RUN_LAYER: every layer's Gram matrix over the probe (for CKA)
KIND_PROFILE = "profile"  # per layer and step: each filter's mean activation per probe image (matching, maps)
KIND_METRICS = "metrics"  # per layer and step: the user's FilterMetric columns, each declared in the record's meta
KIND_FEATURE_VIS = "feature_vis"  # per layer and step: optimised inputs of some filters (`feature_vis`)
KIND_COMMIT = "commit"  # per step, under RUN_LAYER, after all its other records: the step is whole
KINDS = (KIND_RUN, KIND_FILTERS, KIND_MAPS, KIND_KERNELS, KIND_PERTURBATION, KIND_IMPACT, KIND_GRAM, KIND_PROFILE,
         KIND_METRICS, KIND_FEATURE_VIS, KIND_COMMIT)

RUN_LAYER = "_run"  # pseudo-layer under which run-level records live

SHAPE_TEXTURE_INDEX = "st/index"  # per filter, −1 texture only … +1 shape only
# Arrays of a perturbation record, grouped by the perturbation that produced them. A user's
# counterfactual `c` adds "cf/<c>" (relative change), "cf/<c>/ci", "cf/<c>/p", "cf/<c>/q",
# "cf/<c>/cosine", "cf/<c>/z", "cf/<c>/flag".
PERTURBATION_GROUPS = {
    "orientation": ("rotation_angles", "tuning", "osi", "preferred_orientation", "tuning_frequency"),
    "rotation": ("rotation_angles", "rotation_response"),
    "noise": ("noise_sigmas", "stability", "stability_ci"),
    "adversarial": ("adv_epsilon", "fgsm", "pgd", "fgsm_ci", "pgd_ci"),
    "shift": ("shift_fractions", "shift"),
    "reversal": ("reversal",),
    "shape_texture": ("st/shape_sensitivity", "st/texture_sensitivity", SHAPE_TEXTURE_INDEX),
}
# Keys of a group that carry a prefix in the record; readers hand them out without it.
GROUP_KEY_PREFIX = "st/"


def group_keys_of_its_own(group: str) -> set[str]:
    """The keys of a perturbation group that no other group shares: their presence means it was logged."""
    others = {k for g, keys in PERTURBATION_GROUPS.items() if g != group for k in keys}
    return set(PERTURBATION_GROUPS[group]) - others


COUNTERFACTUAL_PREFIX = "cf/"
TOP_EXAMPLE_PREFIX = "topk_"  # impact-record arrays describing the top activating probe examples

_RAW = {"f16": np.float16, "f32": np.float32, "i16": np.int16, "i32": np.int32, "u8": np.uint8}
# Largest finite |x| of an f16s array lands in (2^14, 2^15]: float16's top binade, with headroom to 65504.
_F16S_TOP = 15


def tag_for(layer: str, kind: str) -> str:
    """The summary tag of one record stream."""
    return f"{layer}/{kind}"


def parse_tag(tag: str) -> tuple[str, str]:
    """Inverse of `tag_for`: (layer, kind). Layer names may hold dots but never end in '/kind'."""
    layer, _, kind = tag.rpartition("/")
    return layer, kind


def plugin_content(kind: str, kinds: Optional[Sequence[str]] = None) -> bytes:
    """SummaryMetadata.plugin_data.content for a record of `kind` (a group: of `kinds`)."""
    content: dict[str, Any] = {"version": FORMAT_VERSION, "kind": kind, STAMPED: True, WRITER: __version__}
    if kinds is not None:
        content[GROUP_KINDS] = sorted(kinds)
    return json.dumps(content).encode()


STAMPED = "stamped"  # plugin-content key: the record's step shows only once committed, see `commits`
WRITER = "writer"  # plugin-content key: the tb_convviz version that wrote the record
GROUP_KINDS = "kinds"  # plugin-content key of a group stream: the kinds each of its events holds


def record_origin(content: bytes) -> tuple[int, Optional[str]]:
    """(format version, tb_convviz version that wrote it or None) that plugin content names, read
    also where the record cannot be (a newer format), so a reader can say which version to install;
    (0, None) for content that is not a version object."""
    try:
        meta = json.loads(content.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return 0, None
    if not isinstance(meta, dict):
        return 0, None
    version, writer = meta.get("version", 0), meta.get(WRITER)
    return (version if isinstance(version, int) and not isinstance(version, bool) else 0), (writer if isinstance(writer, str) else None)


def parse_plugin_content(content: bytes) -> dict:
    """Decode plugin content: ``{"version", "kind"}`` (and a group's ``"kinds"``). ValueError says
    why a record cannot be read (not JSON, not an object, a version that is not a number or newer
    than this reader, an unknown kind), so a reader skips that record, names it, and reads the rest."""
    try:
        meta = json.loads(content.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("plugin metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise ValueError(f"plugin metadata is a JSON {type(meta).__name__}, not an object")
    version = meta.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"format version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise ValueError(f"format version {version} is newer than this tb_convviz reads ({FORMAT_VERSION}); upgrade tb_convviz to see it")
    if meta.get("kind") == KIND_GROUP:
        kinds = meta.get(GROUP_KINDS)
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
            raise ValueError(f"a group of records lists its kinds as {kinds!r}, not a list of names")
        if not any(k in KINDS and k != KIND_COMMIT for k in kinds):  # the others: `known_kinds`
            raise ValueError(f"record kinds {kinds!r} are none this version reads")
        return meta
    if meta.get("kind") not in KINDS:
        raise ValueError(f"record kind {meta.get('kind')!r} is not one this version reads")
    return meta


def known_kinds(meta: dict) -> tuple[list[str], list[str]]:
    """(kinds this version reads, kinds it does not) of parsed plugin content: one for a record,
    a group's list for a group (a later version's kind in it costs that kind alone)."""
    kinds = meta[GROUP_KINDS] if meta["kind"] == KIND_GROUP else [meta["kind"]]
    readable = [k for k in kinds if k in KINDS and (k != KIND_COMMIT or meta["kind"] != KIND_GROUP)]
    return readable, [k for k in kinds if k not in readable]


def quantize(a: np.ndarray, groups: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group affine uint8 quantization over the leading `groups` axes: (q, lo, step)."""
    a = np.asarray(a, dtype=np.float32)
    n = int(np.prod(a.shape[:groups])) if groups else 1
    flat = a.reshape(n, -1) if a.size else a.reshape(n, 0)
    if flat.shape[1] == 0:
        return np.zeros(a.shape, np.uint8), np.zeros(n, np.float32), np.zeros(n, np.float32)
    finite = np.where(np.isfinite(flat), flat, 0.0)
    lo = finite.min(axis=1)
    hi = finite.max(axis=1)
    step = ((hi - lo) / 255.0).astype(np.float32)
    safe = np.where(step > 0, step, 1.0)
    q = np.clip(np.rint((finite - lo[:, None]) / safe[:, None]), 0, 255).astype(np.uint8)
    return q.reshape(a.shape), lo.astype(np.float32), step


def dequantize(q: np.ndarray, lo: np.ndarray, step: np.ndarray, groups: int) -> np.ndarray:
    """Inverse of `quantize` (within step/2 per value)."""
    n = lo.shape[0]
    flat = q.reshape(n, -1).astype(np.float32) * step[:, None] + lo[:, None]
    return flat.reshape(q.shape)


@dataclass(frozen=True)
class Delta:
    """A ``q8d`` array before it is written: per-group step and the compressed int8 changes."""

    shape: tuple[int, ...]
    step: np.ndarray  # (groups,) float32
    packed: bytes  # zlib of the int8 changes, group-major

    @property
    def nbytes(self) -> int:
        return self.step.nbytes + len(self.packed)


def q8_delta(a: np.ndarray, reference: np.ndarray) -> Optional[Delta]:
    """`a` (F, ...) as a change from `reference` (the same shape, as a reader decodes it), at q8's
    per-filter tolerance; None when a value moved more than 127 of its steps (a keyframe is then
    the better record)."""
    a = np.asarray(a, dtype=np.float32)
    flat = np.where(np.isfinite(a), a, 0.0).reshape(a.shape[0], -1)
    step = ((flat.max(axis=1) - flat.min(axis=1)) / 255.0).astype(np.float32) if flat.size else np.zeros(a.shape[0], np.float32)
    change = flat - reference.reshape(flat.shape)
    if np.any((step == 0) & np.any(change != 0, axis=1)):
        return None  # a constant filter that changed: no step to express it in
    q = np.rint(change / np.where(step > 0, step, 1.0)[:, None])
    if q.size and np.abs(q).max() > 127:
        return None
    return Delta(tuple(a.shape), step, zlib.compress(q.astype(np.int8).tobytes(), 9))


@dataclass
class Bundle:
    """Named arrays plus JSON metadata; arrays decode lazily so readers pay only for what they use.

    `reference` is the bundle a ``q8d`` array is a change from; the reader sets it
    (`records.resolve_reference`) before any such array is read."""

    meta: dict = field(default_factory=dict)
    _header: dict = field(default_factory=dict)
    _payload: memoryview = field(default_factory=lambda: memoryview(b""))
    _changes: dict = field(default_factory=dict)  # q8d arrays' int8 changes, inflated at first read
    reference: Optional["Bundle"] = None

    def names(self) -> list[str]:
        return list(self._header)

    def __contains__(self, name: str) -> bool:
        return name in self._header

    def shape(self, name: str) -> tuple[int, ...]:
        """An array's shape, without decoding it."""
        return tuple(self._header[name]["shape"])

    def _raw(self, name: str) -> tuple[dict, memoryview]:
        h = self._header[name]
        return h, self._payload[h["offset"] : h["offset"] + h["nbytes"]]

    def checksum(self, name: str) -> int:
        """CRC-32 of an array's stored bytes: what a record stored as a change from this one names."""
        return zlib.crc32(self._raw(name)[1])

    def is_change(self, name: str) -> bool:
        """Whether the array is stored as a change from the bundle's reference (``q8d``)."""
        return self._header[name]["enc"] == "q8d"

    def array(self, name: str, select: Any = None) -> np.ndarray:
        """The decoded array as float32 (or its integer dtype for i32/u8).

        `select` indexes the leading axes, e.g. ``3`` (filter 3 of a kernel) or
        ``(slice(None), 3)`` (filter 3 of every image's maps); for q8 only the selected
        groups are decoded, so one filter of a 512-filter layer costs 1/512 of the whole.
        """
        h, buf = self._raw(name)
        shape = tuple(h["shape"])
        if h["enc"] == "q8":
            n, g = h["ngroups"], h["groups"]
            lo = np.frombuffer(buf, np.float32, n, 0)
            step = np.frombuffer(buf, np.float32, n, 4 * n)
            q = np.frombuffer(buf, np.uint8, int(np.prod(shape)), 8 * n).reshape(n, -1)
            ids = np.arange(n).reshape(shape[:g])
            if select is not None:
                ids = ids[select]
            rows = np.asarray(ids).ravel()
            values = q[rows].astype(np.float32) * step[rows, None] + lo[rows, None]
            return values.reshape(np.shape(ids) + shape[g:])
        if h["enc"] == "q8d":
            if self.reference is None:
                raise ValueError(f"array {name!r} is a change from another step's record, which was not given")
            n, g = h["ngroups"], h["groups"]
            step = np.frombuffer(buf, np.float32, n, 0)
            ids = np.arange(n).reshape(shape[:g])
            if select is not None:
                ids = ids[select]
            rows = np.asarray(ids).ravel()
            changes = self._changes.get(name)
            if changes is None:  # inflated at first read: a footprint or a header read never pays for it
                changes = self._changes[name] = _inflate(name, h, buf)
            base = self.reference.array(name, select).reshape(len(rows), -1)
            values = base + changes[rows].astype(np.float32) * step[rows, None]
            return values.reshape(np.shape(ids) + shape[g:])
        if h["enc"] == "f16s":
            a = np.frombuffer(buf, np.float16).reshape(shape)
            return (a if select is None else a[select]).astype(np.float32) * np.float32(h["scale"])
        a = np.frombuffer(buf, _RAW[h["enc"]]).reshape(shape)
        if select is not None:
            a = a[select]
        if h["enc"] == "f16":
            return a.astype(np.float32)
        return a.astype(np.int32) if h["enc"] == "i16" else np.array(a)

    def wire(self, name: str) -> dict:
        """A compact JSON form for the browser: the stored bytes in base64, no float expansion.

        For ``q8`` the bytes are ``lo`` (float32 × groups), ``step`` (float32 × groups), then
        the uint8 values; the dashboard's decoder mirrors `dequantize`. ``f16s`` carries its
        ``scale``.
        """
        h, buf = self._raw(name)
        if h["enc"] == "q8d":
            return wire_array(self.array(name))
        out = {
            "shape": h["shape"],
            "enc": h["enc"],
            "groups": h.get("ngroups", 0),
            "data": base64.b64encode(bytes(buf)).decode("ascii"),
        }
        if "scale" in h:
            out["scale"] = h["scale"]
        return out


def effective_kernel(kernels: Bundle, select: Any = None) -> Optional[np.ndarray]:
    """The BatchNorm-folded kernel of a kernels record (kernel × per-filter ``bn_scale``), or None;
    `select` picks filters as in `Bundle.array`.

    Folding on read costs nothing in precision: the q8 groups are per filter, so the stored
    kernel scaled per filter is exactly as close to the true folded kernel (tolerance × |scale|).
    """
    if "bn_scale" not in kernels:
        return None
    w = kernels.array("kernel", select)
    scale = np.asarray(kernels.array("bn_scale", select))
    return w * scale.reshape(scale.shape + (1,) * (w.ndim - scale.ndim))


def wire_array(a: np.ndarray) -> dict:
    """An array computed on the fly, in the same JSON form as `Bundle.wire` (raw float32)."""
    a = np.asarray(a, dtype=np.float32)  # not ascontiguousarray, which makes a 0-d array 1-d
    return {"shape": list(a.shape), "enc": "f32", "groups": 0, "data": base64.b64encode(a.tobytes()).decode("ascii")}


def integer_encoding(a: np.ndarray) -> tuple[str, np.ndarray, int]:
    """u8 for flags; i16 for counts and indices that fit it (probe images, filters of a layer,
    classes: a ResNet-50's per-filter counts at half the bytes of int32), else i32."""
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return "u8", a, 0
    fits = a.size == 0 or (int(a.min()) >= np.iinfo(np.int16).min and int(a.max()) <= np.iinfo(np.int16).max)
    return ("i16" if fits else "i32"), a, 0


Q8_MIN_ROW = 8  # a row of 8 values is 16 bytes in f16s and 16 in q8 (8 of them the row's scale)


def natural_encoding(a: np.ndarray) -> tuple[str, np.ndarray, int]:
    """Encoding for analysis results: `integer_encoding` for counts and flags, q8 per filter for
    per-filter curves (F, X), which are most of the bytes, and f16s for per-filter scalars and
    short rows: a row of up to `Q8_MIN_ROW` values (an interval (F, 2), four noise levels) is
    smaller in f16s than with q8's 8 bytes of scale per filter, and more precise."""
    a = np.asarray(a)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        return integer_encoding(a)
    if a.ndim >= 2 and math.prod(a.shape[1:]) > Q8_MIN_ROW and np.isfinite(a).all():  # values per filter, without indexing a row
        return "q8", a, 1
    return "f16s", a, 0


def _f16s(a: np.ndarray) -> tuple[bytes, float]:
    """(float16 bytes of a / scale, scale): scale a power of two, so dividing by it is exact."""
    a = np.asarray(a, np.float64)
    finite = np.abs(a[np.isfinite(a)])
    top = float(finite.max()) if finite.size else 0.0
    scale = 2.0 ** (math.ceil(math.log2(top)) - _F16S_TOP) if top > 0 else 1.0
    return np.ascontiguousarray((a / scale).astype(np.float16)).tobytes(), scale


def encode_bundle(arrays: Mapping[str, tuple[str, Any, int]], meta: Mapping[str, Any]) -> bytes:
    """Serialize {name: (enc, array, quant_groups_axes)} and `meta` into bundle bytes; a ``q8d``
    array comes as its `Delta`."""
    header: dict[str, dict] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, (enc, arr, groups) in arrays.items():
        if enc == "q8d":
            blob = arr.step.tobytes() + arr.packed
            header[name] = {"enc": enc, "shape": list(arr.shape), "offset": offset, "nbytes": len(blob),
                            "groups": 1, "ngroups": int(arr.step.shape[0])}
            chunks.append(blob)
            offset += len(blob)
            continue
        arr = np.asarray(arr)
        if enc == "q8":
            q, lo, step = quantize(arr, groups)
            blob = lo.tobytes() + step.tobytes() + q.tobytes()
            entry = {"groups": groups, "ngroups": int(lo.shape[0])}
        elif enc == "f16s":
            blob, scale = _f16s(arr)
            entry = {"scale": scale}
        elif enc in _RAW:
            blob = np.ascontiguousarray(arr.astype(_RAW[enc])).tobytes()
            entry = {}
        else:
            raise ValueError(f"unknown array encoding {enc!r}")
        entry.update(enc=enc, shape=[int(s) for s in arr.shape], offset=offset, nbytes=len(blob))
        header[name] = entry
        chunks.append(blob)
        offset += len(blob)
    head = json.dumps({"meta": dict(meta), "arrays": header}, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks)


_ENCODINGS = ("q8", "q8d", "f16s", *_RAW)
_ITEM_BYTES = {"f16s": 2, "f16": 2, "f32": 4, "i16": 2, "i32": 4, "u8": 1}


def _check_entry(name: str, h: Any, payload: int) -> None:
    """One header entry must describe bytes that are there, in a layout this version decodes."""
    if not isinstance(h, dict) or h.get("enc") not in _ENCODINGS:
        raise ValueError(f"array {name!r}: unknown encoding")
    shape, offset, nbytes = h.get("shape"), h.get("offset"), h.get("nbytes")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"array {name!r}: bad shape {shape!r}")
    if not all(isinstance(v, int) and v >= 0 for v in (offset, nbytes)) or offset + nbytes > payload:
        raise ValueError(f"array {name!r}: its bytes are missing (truncated record)")
    values = math.prod(shape)
    if h["enc"] in ("q8", "q8d"):
        n, g = h.get("ngroups"), h.get("groups")
        if not isinstance(n, int) or not isinstance(g, int) or not 0 <= g <= len(shape) or n != math.prod(shape[:g]):
            raise ValueError(f"array {name!r}: bad quantisation groups")
        if h["enc"] == "q8d":  # compressed: its length is checked when it is inflated
            if nbytes < 4 * n:
                raise ValueError(f"array {name!r}: its bytes are missing (truncated record)")
            return
        expected = 8 * n + values
    else:
        expected = _ITEM_BYTES[h["enc"]] * values
        if h["enc"] == "f16s" and not isinstance(h.get("scale"), (int, float)):
            raise ValueError(f"array {name!r}: missing scale")
    if nbytes != expected:
        raise ValueError(f"array {name!r}: {nbytes} bytes where its shape needs {expected}")


def decode_bundle(data: bytes) -> Bundle:
    """Parse bundle bytes written by `encode_bundle`; ValueError on anything else, including a
    header that promises bytes the payload does not hold (a truncated record), so that an array
    read later never fails — but for a ``q8d`` array's compressed changes, which are inflated (and
    their count checked) at its first read: the record's CRC (TensorBoard's, or its sidecar
    reference's) already vouches for its bytes, and most reads of a kernels record (its footprint,
    its header) never need them."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise ValueError("not a convviz bundle")
    (hlen,) = struct.unpack("<I", data[4:8])
    try:
        head = json.loads(data[8 : 8 + hlen].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the record's header is not JSON (truncated record)") from None
    meta, arrays = (head.get("meta", {}), head.get("arrays", {})) if isinstance(head, dict) else (None, None)
    if not isinstance(meta, dict) or not isinstance(arrays, dict):
        raise ValueError("the record's header is not a convviz bundle header")
    payload = len(data) - 8 - hlen
    for name, entry in arrays.items():
        _check_entry(name, entry, payload)
    return Bundle(meta, arrays, memoryview(data)[8 + hlen :])


def _inflate(name: str, h: dict, buf: memoryview) -> np.ndarray:
    """A q8d array's int8 changes (groups, values per group); ValueError when they are not all there."""
    n = h["ngroups"]
    try:
        raw = zlib.decompress(buf[4 * n :])
    except zlib.error:
        raise ValueError(f"array {name!r}: its changes do not decompress (truncated record)") from None
    if len(raw) != math.prod(h["shape"]):
        raise ValueError(f"array {name!r}: {len(raw)} changes where its shape needs {math.prod(h['shape'])}")
    return np.frombuffer(raw, np.int8).reshape(n, -1)
