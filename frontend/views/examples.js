// One probe example as a picture: a filter's activation map laid over the probe input, or either
// alone. Shared by the detail's activation maps and its top activating examples.

import { SEQUENTIAL } from "../colormap.js";
import { formatNumber } from "../numeric.js";
import { itemCanvas, overlayCanvas, signalCanvas } from "../raster.js";
import { along } from "../wire.js";
import { el } from "./controls.js";

/**
 * @typedef {import("../wire.js").NdArray} NdArray
 * @typedef {import("../raster.js").Scale} Scale
 */

const EMPTY = { values: new Float32Array(0), shape: [0, 0] };

/** Pixels per value so an item is about `target` CSS px on its longer side. @param {number[]} k @param {number} target */
export function zoomFor(k, target) {
  return Math.max(2, Math.floor(target / Math.max(...k)));
}

/**
 * What the lines of 1-D traces are, shown once above a wall of them.
 * @param {{activation: boolean, input: boolean}} shown which of the two the traces draw
 * @returns {HTMLElement}
 */
export function signalLegend(shown) {
  const legend = el("div", "cvz-chart-legend cvz-signal-legend");
  legend.dataset.testid = "signal-legend";
  if (shown.activation) legend.append(el("span", "cvz-chart-key cvz-series-0", "filter's activation (left axis; in colour on the strip below)"));
  if (shown.input) legend.append(el("span", "cvz-chart-key cvz-signal-input", "probe input, one line per channel, stretched to fit"));
  return legend;
}

/**
 * @param {?NdArray} input the probe example (C, ...spatial), or null to draw the map alone
 * @param {?NdArray} map the filter's activation (...spatial) on it, or null to draw the input alone;
 *   when the two differ in spatial dims (a 1-D layer inside an image model) the input is drawn alone
 * @param {Scale} scale the map's colour scale @param {number} alpha map opacity 0..1
 * @param {number} size CSS px across a 2-D image (1-D signals are wider, 3-D depth slices smaller)
 * @returns {HTMLElement}
 */
export function exampleView(input, map, scale, alpha, size) {
  if (input && map && input.shape.length - 1 !== map.shape.length) return exampleView(input, null, scale, alpha, size);
  const dims = map ? map.shape.length : /** @type {NdArray} */ (input).shape.length - 1;
  if (dims === 1) {
    const style = getComputedStyle(document.documentElement);
    const colors = {
      input: style.getPropertyValue("--cvz-faint").trim() || "#9e9e9e",
      activation: style.getPropertyValue("--cvz-chart-line").trim() || "#1976d2",
      axis: style.getPropertyValue("--cvz-muted").trim() || "#616161",
      font: `9px ${getComputedStyle(document.body).fontFamily}`,
    };
    const activation = map ? map.values : new Float32Array(0);
    const canvas = signalCanvas(
      input ?? EMPTY, activation, scale, SEQUENTIAL, Math.round(size * 2.7), Math.max(40, Math.round(size * 0.57)), colors,
      (v) => formatNumber(v, 2),
    );
    canvas.dataset.testid = "signal-trace";
    return canvas;
  }
  if (dims === 2) {
    if (input) return overlayCanvas(input, map, scale, SEQUENTIAL, alpha, size);
    const m = /** @type {NdArray} */ (map);
    return itemCanvas(m.values, [1, ...m.shape], scale, SEQUENTIAL, zoomFor(m.shape, size));
  }
  // 3-D: a row of depth slices, each over the input slice at the same relative depth.
  const row = document.createElement("div");
  row.className = "cvz-depth-row";
  const depth = map ? map.shape[0] : Math.min(8, /** @type {NdArray} */ (input).shape[1]);
  const sliceSize = Math.max(24, Math.round(size / 2));
  for (let d = 0; d < depth; d++) {
    const slice = map ? along(map, d) : null;
    if (input) {
      const [channels, inDepth, h, w] = input.shape;
      const z = Math.min(inDepth - 1, Math.floor(((d + 0.5) * inDepth) / depth));
      const values = new Float32Array(channels * h * w);
      for (let c = 0; c < channels; c++) values.set(input.values.subarray((c * inDepth + z) * h * w, (c * inDepth + z + 1) * h * w), c * h * w);
      row.append(overlayCanvas({ values, shape: [channels, h, w] }, slice, scale, SEQUENTIAL, alpha, sliceSize));
    } else if (slice) {
      row.append(itemCanvas(slice.values, [1, ...slice.shape], scale, SEQUENTIAL, zoomFor(slice.shape, sliceSize)));
    }
  }
  return row;
}
