// Decodes the plugin's `wire` arrays (tb_convviz/schema/format.py: Bundle.wire / wire_array).

/**
 * @typedef {{shape: number[], enc: string, groups: number, data: string, scale?: number}} Wire
 * @typedef {{shape: number[], values: Float32Array}} NdArray  row-major values
 */

/** @param {string} b64 */
function base64Bytes(b64) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/** IEEE half → float. @param {number} h */
function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/**
 * Decode to float32. q8 mirrors format.dequantize: value = lo[g] + step[g] * q, where the
 * bytes are lo (float32 × groups), step (float32 × groups), then the uint8 values.
 * @param {Wire} wire
 * @returns {NdArray}
 */
export function decodeWire(wire) {
  const bytes = base64Bytes(wire.data);
  const size = wire.shape.reduce((a, b) => a * b, 1);
  const view = new DataView(bytes.buffer);
  const values = new Float32Array(size);
  if (wire.enc === "q8") {
    const groups = wire.groups;
    const per = size / groups;
    const base = 8 * groups;
    for (let g = 0; g < groups; g++) {
      const lo = view.getFloat32(4 * g, true);
      const step = view.getFloat32(4 * (groups + g), true);
      for (let i = g * per, end = i + per; i < end; i++) values[i] = lo + step * bytes[base + i];
    }
  } else if (wire.enc === "f32") {
    for (let i = 0; i < size; i++) values[i] = view.getFloat32(4 * i, true);
  } else if (wire.enc === "f16" || wire.enc === "f16s") {
    // f16s: float16 of value / scale (format.py), scale a power of two.
    const scale = wire.enc === "f16s" ? /** @type {number} */ (wire.scale) : 1;
    for (let i = 0; i < size; i++) values[i] = halfToFloat(view.getUint16(2 * i, true)) * scale;
  } else if (wire.enc === "i16") {
    for (let i = 0; i < size; i++) values[i] = view.getInt16(2 * i, true);
  } else if (wire.enc === "i32") {
    for (let i = 0; i < size; i++) values[i] = view.getInt32(4 * i, true);
  } else if (wire.enc === "u8") {
    values.set(bytes.subarray(0, size));
  } else {
    throw new Error(`unknown array encoding ${wire.enc}`);
  }
  return { shape: wire.shape, values };
}

/**
 * The sub-array at `index` along the first axis (a view, no copy).
 * @param {NdArray} a @param {number} index @returns {NdArray}
 */
export function along(a, index) {
  const shape = a.shape.slice(1);
  const size = shape.reduce((x, y) => x * y, 1);
  return { shape, values: a.values.subarray(index * size, (index + 1) * size) };
}

/**
 * A wire array as a plain list of numbers, NaN as null (as the routes' JSON lists have them).
 * @param {Wire} wire @returns {Array<?number>}
 */
export function plainValues(wire) {
  return Array.from(decodeWire(wire).values, (v) => (Number.isNaN(v) ? null : v));
}
