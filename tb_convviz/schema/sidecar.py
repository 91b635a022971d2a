"""Where a record's bytes live: in its TensorBoard event (logs written before sidecars, and small
records), or in a sidecar file of its run folder that the event points into.

TensorBoard keeps every event of a plugin it is told to keep whole (`samples_per_plugin`
convviz=0) in memory, under both loaders, so a log's bulk in events makes TensorBoard's memory
grow with the log. A record over `INLINE_MAX` bytes is therefore appended to an append-only
sidecar file (one per writer; in an object store one object per step), and its event holds a
*reference*: the sidecar's file name, the record's offset and length, and its CRC-32C. A reader
fetches one record with one ranged read when a route asks for it; TensorBoard holds references
of ~100 bytes. The commit rule (`commits`) is unchanged: references are stamped events like any
record, and a step's sidecar bytes are written before its references.

Reference bytes: ``REFERENCE_MAGIC``, little-endian uint64 offset, uint64 length, uint32 CRC-32C
of the record's bytes, then the sidecar's file name (UTF-8, a name in the run folder, no path).
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Optional

import crc32c

REFERENCE_MAGIC = b"CVZS"
_FIELDS = struct.Struct("<QQI")
# Records up to this size stay in their event: a commit record or a small layer's filters record
# costs TensorBoard little, and a reference to it would cost a read.
INLINE_MAX = 1024
SIDECAR_SUFFIX = ".records"  # never "tfevents": TensorBoard's loaders must not take it for an event file


class Reference(NamedTuple):
    """A record kept in a sidecar file of its run folder."""

    file: str
    offset: int
    length: int
    crc: int


def reference(file: str, offset: int, data: bytes) -> bytes:
    """The event payload pointing at `data`, written to sidecar `file` at `offset`."""
    return REFERENCE_MAGIC + _FIELDS.pack(offset, len(data), crc32c.crc32c(data)) + file.encode()


def parse_reference(payload: bytes) -> Optional[Reference]:
    """The reference an event payload holds, or None for a record held inline. ValueError for a
    damaged reference, or one naming anything but a file of its own run folder."""
    if payload[:4] != REFERENCE_MAGIC:
        return None
    if len(payload) <= 4 + _FIELDS.size:
        raise ValueError("the record's sidecar reference is truncated")
    offset, length, crc = _FIELDS.unpack_from(payload, 4)
    try:
        name = bytes(payload[4 + _FIELDS.size :]).decode()
    except UnicodeDecodeError:
        raise ValueError("the record's sidecar reference does not name a file") from None
    if not name.endswith(SIDECAR_SUFFIX) or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"the record's sidecar reference names {name!r}, not a sidecar file of its run folder")
    return Reference(name, offset, length, crc)


def check(ref: Reference, data: bytes) -> bytes:
    """`data` read for `ref`, if it is the record written there; ValueError otherwise."""
    if len(data) != ref.length:
        raise ValueError(f"its bytes are missing from {ref.file} ({len(data)} of {ref.length}: a truncated sidecar)")
    if crc32c.crc32c(data) != ref.crc:
        raise ValueError(f"its bytes in {ref.file} do not match their checksum")
    return data
