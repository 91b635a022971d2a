// Feature visualisations — the input each filter responds to most (ConvViz(feature_vis=...)) —
// drawn in the model's input space: true colour for 3-channel images and clips, grey per channel
// otherwise, each channel from the probe's lo to hi so that colours read as the model's inputs do.
// Used by the grid (views/layer.js), the filter detail's filmstrip and run vs run's pairs.

import { GREY } from "../colormap.js";
import { itemCanvas, paintRgb, rgbLayout } from "../raster.js";
import { formatNumber } from "../numeric.js";
import { decodeWire } from "../wire.js";
import { el } from "./controls.js";

/**
 * @typedef {{filters: number[], images: import("../wire.js").Wire, objective: Array<?number>,
 *   probe_best: Array<?number>, range: {lo: number[], hi: number[]}, record_step: number}} FeatureVisAnswer
 */

/** The grey scale over every channel's range, for inputs drawn per channel. @param {{lo: number[], hi: number[]}} range */
function greyScale(range) {
  return { lo: Math.min(...range.lo), hi: Math.max(...range.hi) };
}

/**
 * The grid's spec for a layer's visualisations: one cell per visualised filter, in `filters` order.
 * @param {{values: Float32Array, shape: number[]}} images decoded (k, C, ...spatial)
 * @param {{lo: number[], hi: number[]}} range @param {?number} selected a cell, or null
 * @returns {import("./grid.js").GridSpec}
 */
export function visualizationSpec(images, range, selected) {
  const count = images.shape[0];
  const itemShape = images.shape.slice(1);
  const rgb = rgbLayout(itemShape) !== null;
  return {
    values: images.values,
    itemShape,
    count,
    order: Array.from({ length: count }, (_, i) => i),
    lut: GREY,
    kind: "sequential",
    norm: "layer",
    layerScale: greyScale(range),
    selected,
    strip: itemShape.length === 2,
    ...(rgb ? { rgb: range } : {}),
  };
}

/**
 * One visualisation as a canvas about `side` CSS pixels wide.
 * @param {Float32Array} values (C, ...spatial) @param {number[]} shape @param {{lo: number[], hi: number[]}} range
 * @param {number} side
 * @returns {HTMLCanvasElement}
 */
export function visualizationCanvas(values, shape, range, side) {
  const rgb = rgbLayout(shape);
  if (!rgb) {
    const width = shape.length === 2 ? shape[1] : shape[shape.length - 1];
    return itemCanvas(values, shape, greyScale(range), GREY, Math.max(1, Math.floor(side / width)));
  }
  const image = new ImageData(rgb.width, rgb.height);
  paintRgb(image, values, rgb, range, 0, 0);
  const zoom = Math.max(1, Math.floor(side / rgb.width));
  const canvas = document.createElement("canvas");
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${rgb.width * zoom}px`;
  canvas.style.height = `${rgb.height * zoom}px`;
  canvas.width = Math.round(rgb.width * zoom * dpr);
  canvas.height = Math.round(rgb.height * zoom * dpr);
  const atlas = new OffscreenCanvas(rgb.width, rgb.height);
  atlas.getContext("2d").putImageData(image, 0, 0);
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(atlas, 0, 0, canvas.width, canvas.height);
  return canvas;
}

/**
 * What a visualisation reached, in words: its mean activation beside the probe's best example's.
 * @param {?number} objective @param {?number} best
 */
export function reachedText(objective, best) {
  if (objective === null) return "activation unknown";
  const ratio = best !== null && best > 0 ? ` (${formatNumber(objective / best)}× the probe's best)` : "";
  return `activation ${formatNumber(objective)}${ratio}`;
}

/**
 * The filmstrip of one filter's visualisation over the logged steps (the /feature_vis_history
 * answer), each frame captioned with its step and the activation it reached.
 * @param {{steps: number[], images: ?import("../wire.js").Wire, objective: Array<?number>,
 *   probe_best: Array<?number>, range: ?{lo: number[], hi: number[]}}} answer
 * @param {number} current the slider's step: its frame (the last at or before it) is outlined
 * @returns {HTMLElement}
 */
export function filmstrip(answer, current) {
  const strip = el("div", "cvz-filmstrip");
  strip.dataset.testid = "filmstrip";
  if (!answer.images || !answer.range || !answer.steps.length) {
    strip.append(el("p", "cvz-note", "This filter was not visualised at any logged step (the default budget visualises the filters with the largest impact or drift of a few layers each log)."));
    return strip;
  }
  const images = decodeWire(answer.images);
  const size = images.values.length / images.shape[0];
  const shown = answer.steps.filter((s) => s <= current).pop();
  answer.steps.forEach((step, i) => {
    const frame = el("figure", "cvz-filmstrip-frame");
    frame.dataset.testid = "filmstrip-frame";
    frame.dataset.step = String(step);
    if (step === shown) frame.classList.add("cvz-filmstrip-current");
    const canvas = visualizationCanvas(images.values.subarray(i * size, (i + 1) * size), images.shape.slice(1), answer.range ?? { lo: [0], hi: [1] }, 72);
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `Visualisation at step ${step}`);
    const caption = el("figcaption", "", `step ${step}`);
    caption.title = reachedText(answer.objective[i], answer.probe_best[i]);
    frame.append(canvas, caption);
    strip.append(frame);
  });
  return strip;
}

/**
 * Run vs run: each pair's visualisations side by side, A's filter beside its partner in B, for the
 * pairs both runs visualised at their steps (the default budget picks filters per run, so some
 * pairs have one side only).
 * @param {import("../store.js").KeyedLoad} loadA @param {import("../store.js").KeyedLoad} loadB the /feature_vis answers
 * @param {number[]} match B's partner of each A filter (-1: none) @param {number[]} order A filters, most changed first
 * @param {(filter: number) => void} onSelect
 * @returns {HTMLElement[]}
 */
export function visualizationPairs(loadA, loadB, match, order, onSelect) {
  if (loadA.status !== "ready" || loadB.status !== "ready") {
    const failed = loadA.status === "error" ? loadA : loadB.status === "error" ? loadB : null;
    return [el("p", "cvz-note", failed ? `No feature visualisations to pair: ${failed.error}` : "Loading the feature visualisations…")];
  }
  /** @type {FeatureVisAnswer} */
  const a = loadA.data;
  /** @type {FeatureVisAnswer} */
  const b = loadB.data;
  const [ia, ib] = [a, b].map((x) => decodeWire(x.images));
  const sizeA = ia.values.length / ia.shape[0];
  const sizeB = ib.values.length / ib.shape[0];
  const rowA = new Map(a.filters.map((f, i) => [f, i]));
  const rowB = new Map(b.filters.map((f, i) => [f, i]));
  const pairs = order.filter((f) => rowA.has(f) && rowB.has(match[f]));
  const box = el("div", "cvz-vis-pairs");
  box.dataset.testid = "vis-pairs";
  for (const f of pairs) {
    const i = /** @type {number} */ (rowA.get(f));
    const j = /** @type {number} */ (rowB.get(match[f]));
    const figure = el("figure", "cvz-vis-pair");
    figure.dataset.testid = "vis-pair";
    figure.dataset.filter = String(f);
    const images = el("div", "cvz-vis-pair-images");
    images.append(
      visualizationCanvas(ia.values.subarray(i * sizeA, (i + 1) * sizeA), ia.shape.slice(1), a.range, 64),
      visualizationCanvas(ib.values.subarray(j * sizeB, (j + 1) * sizeB), ib.shape.slice(1), b.range, 64),
    );
    const caption = el("figcaption", "", `A #${f} · B #${match[f]}`);
    caption.title = `A: ${reachedText(a.objective[i], a.probe_best[i])}; B: ${reachedText(b.objective[j], b.probe_best[j])}`;
    figure.append(images, caption);
    figure.addEventListener("click", () => onSelect(f));
    box.append(figure);
  }
  const steps = `A's from step ${a.record_step}, B's from step ${b.record_step}`;
  const note = el("p", "cvz-note", pairs.length
    ? `${pairs.length} pair${pairs.length === 1 ? "" : "s"} visualised in both runs (${steps}), most changed first: A's filter left, its partner in B right.`
    : `No pair has a visualisation in both runs (${steps}: A visualised ${a.filters.length} filters, B ${b.filters.length}); log with feature_vis={"filters": ...} to visualise the same ones.`);
  note.dataset.testid = "vis-pairs-note";
  return [note, box];
}
