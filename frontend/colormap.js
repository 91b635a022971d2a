// Colormaps as 256-entry RGBA lookup tables: diverging (blue-white-red) for weights,
// sequential (viridis) for activations.

/** @param {number[][]} stops RGB triples, evenly spaced @returns {Uint8ClampedArray} */
function lookupTable(stops) {
  const lut = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1);
    const k = Math.min(stops.length - 2, Math.floor(x));
    const t = x - k;
    for (let c = 0; c < 3; c++) lut[4 * i + c] = stops[k][c] * (1 - t) + stops[k + 1][c] * t;
    lut[4 * i + 3] = 255;
  }
  return lut;
}

/** ColorBrewer RdBu, reversed so negative is blue. */
export const DIVERGING = lookupTable([
  [5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
  [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31],
]);

/** Matplotlib's viridis, sampled at ten points. */
export const SEQUENTIAL = lookupTable([
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37],
]);

/**
 * A CSS linear-gradient of a table, for legends.
 * @param {Uint8ClampedArray} lut
 */
export function cssGradient(lut) {
  const stops = [];
  for (let i = 0; i <= 8; i++) {
    const k = 4 * Math.round((i / 8) * 255);
    stops.push(`rgb(${lut[k]},${lut[k + 1]},${lut[k + 2]}) ${(i / 8) * 100}%`);
  }
  return `linear-gradient(to right, ${stops.join(", ")})`;
}

/** Black to white: inputs that are not 3-channel images (a feature visualisation of one channel, a sequence). */
export const GREY = lookupTable([[0, 0, 0], [255, 255, 255]]);
