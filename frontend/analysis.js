// Reads the /perturbation and /impact answers: {arrays: {name: {shape, values}}}, values flat and
// row-major, NaN as null. A per-filter array has the layer's filters on its first axis.

import { median } from "./numeric.js";

/**
 * @typedef {{shape: number[], values: Array<?number>}} Plain
 * @typedef {Record<string, Plain>} Arrays
 * @typedef {import("./store.js").Load} Load
 */

/**
 * The value of a per-filter array (F,) for `filter`; null when the array is absent or the value is NaN.
 * @param {?Arrays} arrays @param {string} name @param {number} filter @returns {?number}
 */
export function filterValue(arrays, name, filter) {
  const a = arrays?.[name];
  return a && a.shape.length === 1 ? a.values[filter] ?? null : null;
}

/**
 * The row of a per-filter array (F, X) for `filter`; empty when the array is absent.
 * @param {?Arrays} arrays @param {string} name @param {number} filter @returns {Array<?number>}
 */
export function filterRow(arrays, name, filter) {
  const a = arrays?.[name];
  if (!a || a.shape.length !== 2) return [];
  const width = a.shape[1];
  return a.values.slice(filter * width, (filter + 1) * width);
}

/**
 * A layer-wide array whole: a scalar's one value, or an axis (angles, sigmas); empty when absent.
 * @param {?Arrays} arrays @param {string} name @returns {Array<?number>}
 */
export function whole(arrays, name) {
  return arrays?.[name]?.values ?? [];
}

/**
 * The median over the layer's filters of a per-filter array (F,): what is usual in this layer.
 * @param {?Arrays} arrays @param {string} name @returns {?number}
 */
export function layerMedian(arrays, name) {
  return median(whole(arrays, name));
}

/**
 * What the classes of a filter's top examples have in common, for people: the majority class
 * ("4 of 5 are class 2") only when more than half share it, else how many classes there are.
 * @param {Array<?number>} labels one per example, null when unknown @returns {string}
 */
export function classesInWords(labels) {
  const known = labels.filter((v) => v !== null);
  if (known.length === 0) return "their classes are unknown";
  /** @type {Map<number, number>} */
  const counts = new Map();
  for (const v of known) counts.set(/** @type {number} */ (v), (counts.get(/** @type {number} */ (v)) ?? 0) + 1);
  const [label, count] = [...counts].reduce((best, c) => (c[1] > best[1] || (c[1] === best[1] && c[0] < best[0]) ? c : best));
  if (count === known.length) return `all ${count} are class ${label}`;
  if (2 * count > known.length) return `${count} of ${known.length} are class ${label}`;
  return `${counts.size} classes, none a majority`;
}

/**
 * A layer-wide analysis answer if it is for `where` (run, layer and, when given, step), else null:
 * one loading for the next step keeps the previous step's answer.
 * @param {Load} load @param {{run: string, layer: string, step?: number}} where @returns {any}
 */
export function answerFor(load, where) {
  const a = load.data;
  if (!a || a.run !== where.run || a.layer !== where.layer) return null;
  return where.step === undefined || (load.status === "ready" && a.step === where.step) ? a : null;
}

/** How to turn each analysis on: ConvViz's option that logs it. */
const OFF = {
  perturbation:
    "Perturbation responses are off for this run: ConvViz(..., perturbations=True) with a probe logs each filter's orientation tuning, noise stability and attack response (counterfactuals={...} adds your own edits).",
  impact:
    "Impact is off for this run: ConvViz(..., impact=True) with probe labels logs what the model loses without each filter.",
};

/**
 * Why an analysis is not shown, for people: off for the run, no record at this step, or a failure.
 * Empty while it loads or once it is there.
 * @param {"perturbation"|"impact"} kind @param {Load} load
 */
export function absentMessage(kind, load) {
  if (load.status === "off") return OFF[kind];
  if (load.status !== "error") return "";
  const what = kind === "impact" ? "impact" : "perturbation responses";
  return load.code === 404 ? `No ${what} here: ${load.error}.` : `Could not load the ${what}: ${load.error}`;
}

/**
 * Says which step an answer's record comes from when it is not the slider's: a large model's
 * layers take turns at perturbation responses (ConvViz's response_filters), so a layer's last
 * responses may be a few steps old. Empty when the record is the step's own.
 * @param {"perturbation"|"impact"} kind @param {?{step: number, record_step?: number}} answer
 * @returns {string}
 */
export function recordStepNote(kind, answer) {
  if (!answer || answer.record_step === undefined || answer.record_step === answer.step) return "";
  const from = `from step ${answer.record_step}, this layer's last before step ${answer.step}`;
  if (kind === "impact") return `Impact ${from}: the impact analysis did not record this step.`;
  return `Perturbation responses ${from}: a large model's layers take turns (ConvViz's response_filters), each recorded every few logs.`;
}

/**
 * What a larger probe would buy, in plain words: for each effect size, the images of one class the
 * exact test needs to tell that change from noise (80% power). Empty without the answer.
 * @param {?Record<string, number>} needed the impact answer's `examples_needed` ({effect: images})
 * @returns {string}
 */
export function examplesNeededText(needed) {
  const sizes = Object.entries(needed ?? {})
    .map(([effect, n]) => /** @type {[number, number]} */ ([Number(effect), n]))
    .sort((a, b) => a[0] - b[0]);
  if (!sizes.length) return "";
  const percent = (/** @type {number} */ effect) => `${+(effect * 100).toFixed(1)}%`;
  const [[first, n], ...rest] = sizes;
  const more = rest.map(([effect, m]) => `; ${percent(effect)}: ${m}`).join("");
  return `A larger probe tells smaller changes from noise. To detect a ${percent(first)} change: ${n} images of a class${more}.`;
}
