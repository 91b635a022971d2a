"""The dashboard's wire decoder (frontend/wire.js) in numpy, written apart from tb_convviz.schema.format so
that route tests check the bytes the browser gets, not the writer against itself."""
from __future__ import annotations

import base64

import numpy as np

_RAW = {"f32": np.float32, "f16": np.float16, "i16": np.int16, "i32": np.int32, "u8": np.uint8}


def decode_wire(wire: dict) -> np.ndarray:
    """float32 values of a route's wire array: q8 is lo × groups, step × groups (float32), then
    uint8; f16s is float16 times the wire's scale; the rest raw little-endian."""
    raw = base64.b64decode(wire["data"])
    shape = wire["shape"]
    enc = wire["enc"]
    if enc == "q8":
        g = wire["groups"]
        lo = np.frombuffer(raw, np.float32, g, 0)
        step = np.frombuffer(raw, np.float32, g, 4 * g)
        q = np.frombuffer(raw, np.uint8, int(np.prod(shape)), 8 * g).reshape(g, -1)
        return (lo[:, None] + step[:, None] * q).reshape(shape)
    if enc == "f16s":
        return np.frombuffer(raw, np.float16).astype(np.float32).reshape(shape) * np.float32(wire["scale"])
    return np.frombuffer(raw, _RAW[enc]).astype(np.float32).reshape(shape)


def plain_arrays(answer: dict) -> dict:
    """An analysis answer with its wire `arrays` as the dashboard's api.js hands them to the views:
    {name: {"shape", "values"}}, values flat, NaN as None."""
    def plain(wire: dict) -> dict:
        values = decode_wire(wire).ravel().tolist()
        return {"shape": wire["shape"], "values": [None if v != v else v for v in values]}

    return {**answer, "arrays": {name: plain(wire) for name, wire in answer["arrays"].items()}}
