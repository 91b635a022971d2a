// Decoding the routes' arrays (frontend/wire.js) and laying them out as pixels (frontend/raster.js).
import assert from "node:assert/strict";
import test from "node:test";

import { itemLayout, scaleOf } from "../../frontend/raster.js";
import { along, decodeWire } from "../../frontend/wire.js";

/** @param {ArrayBuffer} buffer */
const b64 = (buffer) => Buffer.from(buffer).toString("base64");

test("decodeWire reads f32, f16, f16s (× its scale), i16, i32 and u8 little-endian", () => {
  const f32 = new Float32Array([1.5, -2, 0.25]);
  assert.deepEqual(Array.from(decodeWire({ shape: [3], enc: "f32", groups: 1, data: b64(f32.buffer) }).values), [1.5, -2, 0.25]);
  // 1.0, -2.0, 0.5 and +infinity as IEEE halves.
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x3800, 0x7c00]);
  assert.deepEqual(Array.from(decodeWire({ shape: [2, 2], enc: "f16", groups: 1, data: b64(f16.buffer) }).values), [1, -2, 0.5, Infinity]);
  // f16s: the same halves times the array's power-of-two scale (format.py).
  assert.deepEqual(Array.from(decodeWire({ shape: [4], enc: "f16s", groups: 0, scale: 2 ** -20, data: b64(f16.buffer) }).values), [2 ** -20, -(2 ** -19), 2 ** -21, Infinity]);
  const i16 = new Int16Array([-1, 30000]);
  assert.deepEqual(Array.from(decodeWire({ shape: [2], enc: "i16", groups: 0, data: b64(i16.buffer) }).values), [-1, 30000]);
  const i32 = new Int32Array([7, -3]);
  assert.deepEqual(Array.from(decodeWire({ shape: [2], enc: "i32", groups: 1, data: b64(i32.buffer) }).values), [7, -3]);
  assert.deepEqual(Array.from(decodeWire({ shape: [3], enc: "u8", groups: 1, data: b64(new Uint8Array([0, 9, 255]).buffer) }).values), [0, 9, 255]);
  assert.throws(() => decodeWire({ shape: [1], enc: "bf16", groups: 1, data: "" }), /unknown array encoding bf16/);
});

test("decodeWire q8: lo + step × q, per group", () => {
  const header = new Float32Array([-1, 10, 0.5, 2]); // lo of groups 0 and 1, then their steps
  const bytes = new Uint8Array(16 + 4);
  bytes.set(new Uint8Array(header.buffer), 0);
  bytes.set([0, 2, 1, 3], 16);
  const { shape, values } = decodeWire({ shape: [2, 2], enc: "q8", groups: 2, data: b64(bytes.buffer) });
  assert.deepEqual(shape, [2, 2]);
  assert.deepEqual(Array.from(values), [-1, 0, 12, 16]);
});

test("along takes one row of the first axis without copying", () => {
  const a = { shape: [3, 2], values: new Float32Array([0, 1, 2, 3, 4, 5]) };
  const row = along(a, 1);
  assert.deepEqual(row.shape, [2]);
  assert.deepEqual(Array.from(row.values), [2, 3]);
  assert.equal(row.values.buffer, a.values.buffer);
});

test("itemLayout: 1-D one row per channel, 2-D channels side by side with a separator column", () => {
  const strip = itemLayout([2, 3]);
  assert.deepEqual([strip.width, strip.height], [3, 2]);
  assert.deepEqual(Array.from(strip.offsets), [0, 1, 2, 3, 4, 5]);
  const tiles = itemLayout([2, 2, 2]);
  assert.deepEqual([tiles.width, tiles.height], [5, 2]);
  assert.deepEqual(Array.from(tiles.offsets), [0, 1, -1, 4, 5, 2, 3, -1, 6, 7]);
});

test("itemLayout 3-D: depth slices left to right, channels stacked", () => {
  const cube = itemLayout([1, 2, 1, 1]); // one channel, depth 2 of 1×1
  assert.deepEqual([cube.width, cube.height], [3, 1]);
  assert.deepEqual(Array.from(cube.offsets), [0, -1, 1]);
});

test("scaleOf: weights symmetric around zero, activations min..max", () => {
  assert.deepEqual(scaleOf([-0.5, 2], "diverging"), { lo: -2, hi: 2 });
  assert.deepEqual(scaleOf([0, 0], "diverging"), { lo: -1, hi: 1 });
  assert.deepEqual(scaleOf([1, 3], "sequential"), { lo: 1, hi: 3 });
  assert.deepEqual(scaleOf([2, 2], "sequential"), { lo: 1, hi: 3 });
  assert.deepEqual(scaleOf([], "sequential"), { lo: -1, hi: 1 });
});
