"""One event per layer and step: a *group* of that layer's records of the step.

TensorBoard's Python loader (`--load_fast=false`) holds about a kilobyte of Python objects per
event whatever the event carries (1.4 KB for a 100-byte sidecar reference, seen here), and every
event of this plugin is kept (`samples_per_plugin` convviz=0). A ResNet-18 step wrote ~85 events,
one per record; grouping a layer's records of a step makes that ~21, so what TensorBoard holds
for a sweep of many runs stays near its own footprint (`bench/many_runs.py`). The Rust loader and
every listing also handle a fifth of the data points.

* a scalar string tensor (TensorBoard's data class "tensor", not "blob sequence"): a reader gets
  every step's groups of a run in the one call that lists its steps, where a blob is one call
  each (~40 ms per call to TensorBoard's Rust data server on Linux, seen here);
* tag ``<layer>/@<kind>+<kind>…`` (the group's kinds, sorted): a tag's plugin content is its first
  event's, so each set of kinds a layer logs (full kernels every few steps, layers taking turns
  at responses) is a stream of its own; its plugin content has kind ``group`` and the list
  ``kinds``, from which readers learn what a step holds without reading it;
* payload: ``GROUP_MAGIC``, a little-endian uint32 header length, the JSON header
  ``[[kind, length], …]``, then each part's bytes in that order: the record itself (small ones)
  or its sidecar reference (`schema.sidecar`).

A step's commit record is an event of its own after its groups, a string tensor too, under
``COMMIT_TAG`` (format 1's blob-sequence commits keep ``_run/commit``: one tag never changes its
data class). See `schema.commits`.
"""
from __future__ import annotations

import json
import struct
from typing import Sequence

GROUP_MAGIC = b"CVZG"
KIND_GROUP = "group"
_HEADER = struct.Struct("<I")
_TAG_MARK = "@"
COMMIT_TAG = f"_run/{_TAG_MARK}commit"  # `format.RUN_LAYER`, `format.KIND_COMMIT`


def group_tag(layer: str, kinds: Sequence[str]) -> str:
    """The tag of a layer's group stream holding `kinds`."""
    return f"{layer}/{_TAG_MARK}{'+'.join(sorted(kinds))}"


def encode_group(parts: Sequence[tuple[str, bytes]]) -> bytes:
    """A group's payload from (kind, stored bytes) parts, one per kind."""
    header = json.dumps([[kind, len(data)] for kind, data in parts]).encode()
    return GROUP_MAGIC + _HEADER.pack(len(header)) + header + b"".join(data for _, data in parts)


def is_group_tag(tag: str) -> bool:
    """Whether a tag names a group stream (tools reading event files; readers go by the content)."""
    return f"/{_TAG_MARK}" in tag and tag != COMMIT_TAG


def group_parts(payload: bytes) -> list[tuple[str, bytes]]:
    """(kind, stored bytes) of every record in a group's payload; ValueError when it is not a
    whole group."""
    if payload[:4] != GROUP_MAGIC or len(payload) < 4 + _HEADER.size:
        raise ValueError("the layer's group of records is not one (bad magic or truncated)")
    (size,) = _HEADER.unpack_from(payload, 4)
    start = 4 + _HEADER.size + size
    try:
        header = json.loads(bytes(payload[4 + _HEADER.size : start]).decode())
        entries = [(str(k), int(n)) for k, n in header]
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise ValueError(f"the layer's group of records has an unreadable header ({e})") from None
    if start + sum(n for _, n in entries) != len(payload) or any(n < 0 for _, n in entries):
        raise ValueError("the layer's group of records is truncated or longer than its header says")
    out, offset = [], start
    for kind, length in entries:
        out.append((kind, bytes(payload[offset : offset + length])))
        offset += length
    return out


def group_part(payload: bytes, kind: str) -> bytes:
    """The stored bytes of `kind` in a group's payload; ValueError when it is not a whole group
    holding that kind."""
    found = dict(group_parts(payload))
    if kind not in found:
        raise ValueError(f"the layer's group of records holds no {kind!r} record though its stream lists one")
    return found[kind]


def stored_records(tag: str, payload: bytes) -> list[tuple[str, bytes]]:
    """(kind, stored bytes) of each record one event holds: a group's, or the one its tag names."""
    return group_parts(payload) if is_group_tag(tag) else [(tag.rpartition("/")[2].removeprefix(_TAG_MARK), payload)]
