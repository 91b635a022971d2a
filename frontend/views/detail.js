// One filter in detail: its input-channel slices (raw and BatchNorm-folded), its activation
// maps on every probe image kept (over the probe input), its perturbation responses and impact
// where the run logged them, and its history over every logged step.

import { absentMessage, answerFor, recordStepNote } from "../analysis.js";
import { IMPACT, counterfactualKey } from "../recordkeys.js";
import { DIVERGING } from "../colormap.js";
import { itemCanvas, scaleOf } from "../raster.js";
import { along, decodeWire } from "../wire.js";
import { formatNumber, formatPercent } from "../numeric.js";
import { el, factList, section } from "./controls.js";
import { lineChart } from "./chart.js";
import { exampleView, signalLegend, zoomFor } from "./examples.js";
import { impactViews } from "./filterimpact.js";
import { setExportParts } from "./download.js";
import { FilterGrid } from "./grid.js";
import { drawLegend } from "./layer.js";
import { responseViews } from "./responses.js";

/**
 * @typedef {import("../wire.js").NdArray} NdArray
 * @typedef {import("../store.js").State} State
 * @typedef {import("../store.js").Load} Load
 */

// Up to this many input channels, each slice is a canvas of its own, labelled; more share one canvas.
const CANVAS_PER_SLICE = 64;

/**
 * Every input-channel slice of a kernel, on one diverging scale.
 * 1-D kernels also get a line plot of up to 8 channels.
 * @param {NdArray} kernel (in_channels, ...kernel_size)
 * @returns {HTMLElement[]}
 */
function sliceViews(kernel) {
  const [channels, ...k] = kernel.shape;
  const scale = scaleOf(kernel.values, "diverging");
  const wall = channels > CANVAS_PER_SLICE ? sliceMosaic(kernel, scale) : el("div", `cvz-slices cvz-slices-${k.length}d`);
  const zoom = zoomFor(k.length === 3 ? k.slice(1) : k, channels <= 8 ? 56 : 32);
  for (let c = 0; c < channels && channels <= CANVAS_PER_SLICE; c++) {
    const slice = along(kernel, c);
    const cell = el("div", "cvz-slice");
    cell.title = `input channel ${c}`;
    const canvas = itemCanvas(slice.values, [1, ...k], scale, DIVERGING, k.length === 1 ? Math.max(zoom, 12) : zoom);
    cell.append(canvas, el("span", "cvz-slice-label", String(c)));
    wall.append(cell);
  }
  const legend = el("div", "cvz-legend");
  drawLegend(legend, "diverging", scale, "one scale for all slices");
  const views = [legend, wall];
  if (k.length === 1) {
    const shown = Math.min(channels, 8);
    views.push(
      lineChart({
        title: `Weights over the kernel${channels > shown ? ` (first ${shown} of ${channels} input channels)` : ""}`,
        x: Array.from({ length: k[0] }, (_, i) => i),
        series: Array.from({ length: shown }, (_, c) => ({ label: `in ${c}`, values: Array.from(along(kernel, c).values) })),
        xLabel: "tap",
        yLabel: "weight",
      }),
    );
  }
  return views;
}

/**
 * Many input channels (a ResNet-50's 1×1 convs read 512 to 2048) drawn as one canvas, the way the
 * filter grid draws filters: a canvas per slice made the page lay out thousands of elements.
 * @param {NdArray} kernel (in_channels, ...kernel_size) @param {import("../raster.js").Scale} scale
 * @returns {HTMLElement}
 */
function sliceMosaic(kernel, scale) {
  const [channels, ...k] = kernel.shape;
  const grid = new FilterGrid({
    testid: "slice-mosaic",
    label: "input-channel slices",
    name: (c) => `Input channel ${c}`,
    describe: (c) => [["max |weight|", formatNumber(Math.max(...along(kernel, c).values.map(Math.abs)))]],
    onSelect: () => {},
  });
  grid.draw({
    values: kernel.values,
    itemShape: [1, ...k],
    count: channels,
    order: Array.from({ length: channels }, (_, c) => c),
    lut: DIVERGING,
    kind: "diverging",
    norm: "layer",
    layerScale: scale,
    selected: null,
    strip: k.length === 1,
  });
  return grid.element;
}

/**
 * The filter's activation over each probe image kept, laid over that image.
 * @param {NdArray} maps (images, ...spatial) @param {number[]} imageIds @param {?NdArray} probe (N, C, ...spatial)
 * @param {?number[]} labels @param {number} alpha
 * @returns {HTMLElement[]}
 */
function mapViews(maps, imageIds, probe, labels, alpha) {
  const scale = scaleOf(maps.values, "sequential");
  const dims = maps.shape.length - 1;
  const wall = el("div", "cvz-maps");
  for (let i = 0; i < maps.shape[0]; i++) {
    const map = along(maps, i);
    const id = imageIds[i] ?? i;
    // The probe is this layer's input only when it has the same number of spatial dims (a 1-D
    // layer inside an image model sees something else): otherwise the map is drawn alone.
    const input = probe && id < probe.shape[0] && probe.shape.length - 2 === dims ? along(probe, id) : null;
    const cell = el("figure", "cvz-map");
    cell.dataset.testid = "detail-map";
    cell.append(exampleView(input, map, scale, alpha, 112));
    const label = labels && labels[id] !== undefined ? `image #${id} · label ${labels[id]}` : `image #${id}`;
    cell.append(el("figcaption", "cvz-map-label", label));
    wall.append(cell);
  }
  const legend = el("div", "cvz-legend");
  drawLegend(legend, "sequential", scale, "one scale for all images");
  if (dims === 1) return [signalLegend({ activation: true, input: probe !== null && probe.shape.length === 3 }), legend, wall];
  return [legend, wall];
}

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountDetail(root, store) {
  const panel = el("section", "cvz-card cvz-detail");
  panel.dataset.testid = "detail-panel";
  const head = el("div", "cvz-detail-head");
  const title = el("h3", "cvz-card-title");
  title.dataset.testid = "detail-title";
  const close = /** @type {HTMLButtonElement} */ (el("button", "cvz-icon-button", "×"));
  close.type = "button";
  close.title = "Close";
  close.setAttribute("aria-label", "Close filter detail");
  close.addEventListener("click", () => store.selectFilter(null));
  head.append(title, close);
  const sub = el("div", "cvz-card-sub");
  const body = el("div", "cvz-detail-body");
  panel.append(head, sub, body);
  root.append(panel);

  /** What the body was drawn from, so it is redrawn only when one of them changes. */
  let shown = /** @type {unknown[]} */ ([]);
  /** @type {{data: any, array: ?NdArray}} */
  let probeDecoded = { data: null, array: null };

  store.subscribe((s) => {
    panel.hidden = s.phase !== "ready" || s.filter === null;
    if (panel.hidden) {
      shown = [];
      return;
    }
    title.textContent = `Filter #${s.filter}`;
    sub.textContent = `layer ${s.layer} · run ${s.run} · step ${s.step}`;
    panel.dataset.loading = String(s.detail.status === "loading");
    if (s.detail.status === "error") {
      body.replaceChildren(el("p", "cvz-note", `Could not load this filter: ${s.detail.error}`));
      shown = [];
      return;
    }
    const data = s.detail.data;
    if (!data) {
      if (shown.length === 0) body.replaceChildren(el("p", "cvz-note", `Loading filter #${s.filter}…`));
      return;
    }
    const probeLoad = s.probes[s.run];
    const probeData = probeLoad?.status === "ready" ? probeLoad.data : null;
    const { perturbation, impact } = s.analysis;
    const now = [data, probeData, s.overlay, s.mode === "impact", perturbation.status, perturbation.data, impact.status, impact.data];
    if (now.every((v, i) => v === shown[i])) return;
    shown = now;
    if (probeDecoded.data !== probeData) probeDecoded = { data: probeData, array: probeData ? decodeWire(probeData.images) : null };
    panel.dataset.filter = String(data.filter);
    panel.dataset.step = String(data.step);
    setExportParts(panel, [data.run, data.layer, `step${data.step}`, `filter${data.filter}`]);
    body.replaceChildren(...render(data, probeDecoded.array, probeData?.labels ?? null, s, store));
  });
}

/**
 * @param {any} data the /filter payload @param {?NdArray} probe @param {?number[]} labels
 * @param {State} s @param {import("../store.js").Store} store
 * @returns {HTMLElement[]}
 */
function render(data, probe, labels, s, store) {
  const st = data.stats;
  /** @type {Array<[string, string]>} */
  const rows = [
    ["L2 norm", formatNumber(st.l2)],
    ["mean |w|", formatNumber(st.mean_abs)],
    ["drift vs previous", formatNumber(st.cosine_distance_prev)],
    ["drift vs first", formatNumber(st.cosine_distance_first)],
    ["norm change vs previous", formatPercent(st.norm_change_prev)],
    ["act mean", formatNumber(st.act_mean)],
    ["act max", formatNumber(st.act_max)],
    ["positive fraction", formatPercent(st.act_frac_pos, { signed: false })],
  ];
  if (st.dead) rows.push(["status", "dead: weights ≈ 0"]);
  const facts = factList(rows, "cvz-facts");
  /** @type {HTMLElement[]} */
  const weights = [];

  const slices = section("Input-channel slices", "detail-slices");
  if (data.slices) {
    const kernel = decodeWire(data.slices);
    if (kernel.shape.length === 4) {
      slices.append(el("p", "cvz-note", "Conv3d: each input channel's depth slices, front to back."));
    }
    if (data.kernel_step !== data.step) {
      slices.append(el("p", "cvz-note", `Full kernels from step ${data.kernel_step}: they are kept every few logs.`));
    }
    slices.append(...sliceViews(kernel));
  } else {
    slices.append(el("p", "cvz-note", "No full kernel was logged at or before this step."));
  }
  weights.push(slices);

  if (data.effective) {
    const info = store.layerEntry()?.info;
    const effective = section("Effective (BatchNorm folded)", "detail-effective");
    effective.append(
      el("p", "cvz-note", `What the filter computes in eval mode: weights × γ/σ of BatchNorm ${info?.batchnorm ?? ""}.`),
      ...sliceViews(decodeWire(data.effective)),
    );
    weights.push(effective);
  }

  const maps = section("Activations on the probe", "detail-maps");
  const mapArray = data.maps ? decodeWire(data.maps) : null;
  if (mapArray) {
    const alpha = el("label", "cvz-overlay");
    const slider = document.createElement("input");
    slider.type = "range";
    slider.min = "0";
    slider.max = "1";
    slider.step = "0.05";
    slider.value = String(s.overlay);
    slider.dataset.testid = "overlay-alpha";
    slider.addEventListener("change", () => store.setView({ overlay: Number(slider.value) }));
    alpha.append(el("span", "cvz-field-label", "Overlay"), slider);
    const overlays = probe !== null && mapArray.shape.length >= 3 && probe.shape.length - 1 === mapArray.shape.length;
    if (overlays) maps.append(alpha);
    maps.append(...mapViews(mapArray, data.map_images, probe, labels, s.overlay));
  } else {
    maps.append(el("p", "cvz-note", "No activation maps: this run was logged without a probe."));
  }
  weights.push(maps);

  const h = data.history;
  const history = section(`History over ${h.steps.length} logged steps`, "detail-history");
  const charts = el("div", "cvz-charts");
  charts.append(
    lineChart({
      title: "L2 norm of the weights",
      x: h.steps,
      series: [{ label: "L2 norm", values: h.l2 }],
      xLabel: "step",
      yLabel: "L2 norm",
      current: data.step,
      testid: "history-chart",
    }),
    lineChart({
      title: "Drift: cosine distance to the previous and the first logged step",
      x: h.steps,
      xLabel: "step",
      yLabel: "cosine distance",
      series: [
        { label: "vs previous", values: h.cosine_distance_prev },
        { label: "vs first", values: h.cosine_distance_first, className: "cvz-series-1" },
      ],
      current: data.step,
      testid: "history-chart",
    }),
  );
  if (h.act_mean) {
    charts.append(
      lineChart({
        title: "Mean activation on the probe",
        x: h.steps,
        series: [{ label: "act mean", values: h.act_mean }],
        xLabel: "step",
        yLabel: "mean activation",
        current: data.step,
        testid: "history-chart",
      }),
    );
  }
  history.append(charts);
  const histories = [history];
  const counterfactuals = answerFor(s.analysis.perturbation, data)?.counterfactuals ?? [];
  const trends = analysisHistory(h, data.step, counterfactuals, s.names);
  if (trends) histories.push(trends);

  const examples = { probe, maps: mapArray, mapImages: data.map_images, alpha: s.overlay };
  const analysis = [...impactSections(s.analysis.impact, data, examples, s.names), responseSection(s.analysis.perturbation, data, s.names)];
  // Opened from the Impact view, what the filter does for the model comes first.
  return s.mode === "impact" ? [facts, ...analysis, ...weights, ...histories] : [facts, ...weights, ...analysis, ...histories];
}

/**
 * @param {Load} load the /impact answer @param {any} data the /filter payload
 * @param {import("./filterimpact.js").Examples} examples @param {import("../recordkeys.js").RecordNames} names
 * @returns {HTMLElement[]}
 */
function impactSections(load, data, examples, names) {
  const answer = answerFor(load, data);
  if (answer) return impactViews(answer, data.filter, examples, data.per_class ?? null, names);
  const box = section("Impact on the model", "detail-impact");
  const note = el("p", "cvz-note", absentMessage("impact", load) || "Loading the impact…");
  note.dataset.testid = "detail-impact-message";
  box.append(note);
  return [box];
}

/**
 * @param {Load} load the /perturbation answer @param {any} data the /filter payload
 * @param {import("../recordkeys.js").RecordNames} names
 */
function responseSection(load, data, names) {
  const box = section("Perturbation responses", "detail-responses");
  const answer = answerFor(load, data);
  if (answer) {
    const turn = recordStepNote("perturbation", answer);
    if (turn) {
      const note = el("p", "cvz-note", turn);
      note.dataset.testid = "detail-responses-step";
      box.append(note);
    }
    box.append(...responseViews(answer, data.filter, names));
  } else {
    const note = el("p", "cvz-note", absentMessage("perturbation", load) || "Loading the perturbation responses…");
    note.dataset.testid = "detail-responses-message";
    box.append(note);
  }
  return box;
}

/**
 * The filter's impact and responses over the steps they were logged: how its impact grew.
 * @param {any} h the /filter payload's history @param {number} step
 * @param {string[]} names the counterfactuals' names (from the /perturbation payload)
 * @param {import("../recordkeys.js").RecordNames} recordNames
 * @returns {?HTMLElement}
 */
function analysisHistory(h, step, names, recordNames) {
  const impact = h.impact;
  const responses = h.perturbation;
  const counterfactuals = names.map((name) => /** @type {[string, string]} */ ([counterfactualKey(recordNames, name), name]));
  const percent = (/** @type {number} */ v) => formatPercent(v);
  /**
   * history, title, y axis title, [key, label] of each series, y tick format
   * @type {Array<[any, string, string, Array<[string, string]>, ((v: number) => string)?]>}
   */
  const specs = [
    [impact, "Δaccuracy without this filter", "Δaccuracy (%)", [[IMPACT.dAccuracy, "Δaccuracy"]], percent],
    [impact, "Δloss without this filter: exact and Taylor estimate", "Δloss (nats)", [[IMPACT.dLoss, "exact"], [IMPACT.taylorDLoss, "Taylor"]]],
    [impact, "Class selectivity", "selectivity (0–1)", [[IMPACT.classSelectivity, "class selectivity"]]],
    [responses, "Orientation selectivity (OSI)", "OSI (0–1)", [["osi", "OSI"]]],
    [responses, "Time-reversal cosine", "cosine", [["reversal", "reversal"]]],
    [responses, "Adversarial change", "relative change", [["fgsm", "FGSM"], ["pgd", "PGD"]]],
    [responses, "Counterfactual change of mean |activation|", "change (%)", counterfactuals, percent],
  ];
  const charts = el("div", "cvz-charts");
  for (const [series, title, yLabel, keys, format] of specs) {
    const present = series ? keys.filter(([k]) => series[k]) : [];
    if (!present.length) continue;
    charts.append(
      lineChart({
        title,
        x: series.steps,
        series: present.map(([k, label]) => ({ label, values: series[k] })),
        xLabel: "step",
        yLabel,
        format,
        current: step,
        testid: "analysis-history-chart",
      }),
    );
  }
  if (!charts.childElementCount) return null;
  const box = section("Impact and responses over the logged steps", "detail-analysis-history");
  box.append(charts);
  return box;
}
