// Fetches the plugin's JSON routes. Relative URLs resolve against the iframe's
// <base href="plugin/convviz/">, so "layer" is /data/plugin/convviz/layer.

import { decodeWire, plainValues } from "./wire.js";

/** A route answered with an error, or could not be reached; `message` is for people. */
export class ApiError extends Error {
  /** @param {string} message @param {number} status HTTP status, 0 when unreachable */
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** Times a route answering 503 (every pairing solve slot taken) is asked again, after its Retry-After. */
const BUSY_RETRIES = 5;

/**
 * @param {string} route
 * @param {Record<string, string|number>} [params]
 * @returns {Promise<any>} the parsed JSON body, with `receivedAt` (performance.now()) added
 */
async function getJson(route, params) {
  const query = params ? `?${new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]))}` : "";
  let response;
  try {
    response = await fetch(route + query, { credentials: "same-origin" });
    for (let tries = 0; response.status === 503 && tries < BUSY_RETRIES; tries++) {
      const wait = Number(response.headers.get("Retry-After")) || 2;
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      response = await fetch(route + query, { credentials: "same-origin" });
    }
  } catch (e) {
    throw new ApiError(`cannot reach TensorBoard (${e instanceof Error ? e.message : e})`, 0);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`${route}: TensorBoard answered HTTP ${response.status} without data`, response.status);
  }
  if (!response.ok) {
    throw new ApiError(body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`, response.status);
  }
  body.receivedAt = performance.now();
  return body;
}

/** Runs → layers (facts, logged steps) → probe summary. */
export const fetchIndex = () => getJson("index");

/** One layer at one step: stats (decoded here from wire arrays to plain lists), tiles, activation maps. */
export const fetchLayer = (/** @type {string} */ run, /** @type {string} */ layer, /** @type {number} */ step) =>
  getJson("layer", { run, layer, step }).then((data) => ({ ...data, stats: plainRecord(data.stats) }));

/**
 * Per-filter arrays sent as wire arrays (binary is far cheaper than JSON numbers for thousands of
 * filters), as the plain lists the views read.
 * @param {Record<string, import("./wire.js").Wire>} wires @returns {Record<string, Array<?number>>}
 */
const plainRecord = (wires) => Object.fromEntries(Object.entries(wires).map(([name, wire]) => [name, plainValues(wire)]));

/** One filter: slices, maps and history over every logged step. */
export const fetchFilter = (
  /** @type {string} */ run,
  /** @type {string} */ layer,
  /** @type {number} */ step,
  /** @type {number} */ filter,
) => getJson("filter", { run, layer, step, filter });

/**
 * A layer's perturbation responses or impact table at one step, every filter at once:
 * {arrays: {name: {shape, values}}, ...}, decoded here from the wire arrays the server sends.
 * 404 when the run did not log that analysis.
 * @param {"perturbation"|"impact"} kind @param {string} run @param {string} layer @param {number} step
 */
export const fetchAnalysis = (kind, run, layer, step) =>
  getJson(kind, { run, layer, step }).then((data) => ({
    ...data,
    arrays: Object.fromEntries(
      Object.entries(data.arrays).map(([name, wire]) => [name, { shape: wire.shape, values: plainValues(wire) }]),
    ),
  }));

/**
 * Every per-filter column of a layer at one step, as declared ({name, label, unit, description,
 * better, group, ci, format, kind, record_step}), and their values decoded: {name: (F,)}, each
 * interval companion (F, 2). The Impact view's table and its CSV.
 * @param {string} run @param {string} layer @param {number} step
 * @returns {Promise<import("./columns.js").Table>}
 */
export const fetchTable = (run, layer, step) =>
  getJson("table", { run, layer, step }).then((data) => ({
    ...data,
    values: Object.fromEntries(Object.entries(data.values).map(([name, wire]) => [name, decodeWire(/** @type {any} */ (wire))])),
  }));

/**
 * Per layer of the run (model order), the distribution of its filters' shape–texture index at `step`:
 * {layers, edges (bins over [−1, 1]), histograms (filters per bin, per layer), medians, filters}.
 * 404 when the run did not log shape_texture.
 */
/** The run's findings at a step: ranked, with evidence, rules and the kinds that could not be looked for. */
export const fetchFindings = (/** @type {string} */ run, /** @type {number} */ step) => getJson("findings", { run, step });

export const fetchShapeTexture = (/** @type {string} */ run, /** @type {number} */ step) =>
  getJson("shape_texture", { run, step });

/**
 * What each of the run's logs cost, by part (tb_convviz/write/cost.py): {steps, costs: one per step, null
 * for a log from before costs were kept}.
 * @param {string} run @returns {Promise<{run: string, steps: number[], costs: Array<?import("./costline.js").LogCost>}>}
 */
export const fetchCost = (run) => getJson("cost", { run });

/**
 * A layer's feature visualisations from its last record at or before `step`: {record_step, filters,
 * images (wire (k, C, *size), in the model's input space), objective, probe_best, range {lo, hi}}.
 * 404 when the run did not log feature_vis or has none at or before `step`.
 */
export const fetchFeatureVis = (/** @type {string} */ run, /** @type {string} */ layer, /** @type {number} */ step) =>
  getJson("feature_vis", { run, layer, step });

/** One filter's visualisation at every step that has one: {steps, images (wire or null), objective, probe_best, range}. */
export const fetchFeatureVisHistory = (/** @type {string} */ run, /** @type {string} */ layer, /** @type {number} */ filter) =>
  getJson("feature_vis_history", { run, layer, filter });

/** The run's probe inputs and labels. */
export const fetchProbe = (/** @type {string} */ run) => getJson("probe", { run });

/**
 * Per-filter drift of one layer between two (run, step) snapshots; run vs run pairs at `pairStep`
 * (-1: the server's default, the last step both runs have response profiles for).
 * @param {{layer: string, runA: string, stepA: number, runB: string, stepB: number, align: "index"|"match"|"aligned", pairStep: number}} q
 */
export const fetchCompare = (q) =>
  getJson("compare", {
    layer: q.layer,
    run_a: q.runA,
    step_a: q.stepA,
    run_b: q.runB,
    step_b: q.stepB,
    align: q.align,
    ...(q.pairStep >= 0 && q.align !== "index" ? { pair_step: q.pairStep } : {}),
  }).then((data) => ({ ...data, metrics: plainRecord(data.metrics) }));

/** Layer × layer debiased CKA between (runA, stepA) and (runB, stepB): {a, b: {run, step, layers}, cka, cka_lo, cka_hi: flat, images}. */
export const fetchCkaLayers = (
  /** @type {string} */ runA,
  /** @type {number} */ stepA,
  /** @type {string} */ runB,
  /** @type {number} */ stepB,
) => getJson("cka_layers", { run_a: runA, step_a: stepA, run_b: runB, step_b: stepB });

/** Step × step CKA of one layer with itself: {steps, cka: flat T×T}. */
export const fetchCkaEpochs = (/** @type {string} */ run, /** @type {string} */ layer) =>
  getJson("cka_epochs", { run, layer });

/** Per layer, CKA of every step with the last: {steps, final_step, layers, cka: {layer: per step}}. */
export const fetchCkaFinal = (/** @type {string} */ run) => getJson("cka_final", { run });

/** Every step's 2-D map of the layer's filters: {steps, points: wire (steps, filters, 2)}. */
export const fetchEmbedding = (
  /** @type {string} */ run,
  /** @type {string} */ layer,
  /** @type {"pca"|"umap"|"tsne"} */ method,
) => getJson("embedding", { run, layer, method });
