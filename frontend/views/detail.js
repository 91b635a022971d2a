// One filter in detail: its input-channel slices (raw and BatchNorm-folded), its activation
// maps on every probe image kept (over the probe input), its perturbation responses and impact
// where the run logged them, and the history over every logged step of any of its columns (as the
// run declares them, a user's metric among them).

import { absentMessage, answerFor, recordStepNote } from "../analysis.js";
import { defaultSortColumn, formatValue, groupColumns, groupTitle, headerUnit, inGroupOrder } from "../columns.js";
import { DIVERGING } from "../colormap.js";
import { itemCanvas, scaleOf } from "../raster.js";
import { along, decodeWire } from "../wire.js";
import { formatNumber, present } from "../numeric.js";
import { el, factList, labelledSelect, section } from "./controls.js";
import { lineChart } from "./chart.js";
import { exampleView, signalLegend, zoomFor } from "./examples.js";
import { impactViews } from "./filterimpact.js";
import { setExportParts } from "./download.js";
import { FilterGrid } from "./grid.js";
import { filmstrip, reachedText } from "./featurevis.js";
import { drawLegend } from "./layer.js";
import { hasFeatureVis } from "../recordkeys.js";
import { responseViews } from "./responses.js";

/**
 * @typedef {import("../wire.js").NdArray} NdArray
 * @typedef {import("../store.js").State} State
 * @typedef {import("../store.js").Load} Load
 * @typedef {import("../columns.js").Column} Column
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
  const wall = el("div", dims === 1 ? "cvz-maps cvz-maps-1d" : "cvz-maps");
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
    // A 1-D trace's caption heads it, like a chart's title: below, it sat as close to the next trace.
    if (dims === 1) cell.prepend(el("figcaption", "cvz-map-label", label));
    else cell.append(el("figcaption", "cvz-map-label", label));
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
    const { table } = s.analysis;
    const now = [data, probeData, s.overlay, s.mode === "impact", perturbation.status, perturbation.data, impact.status, impact.data,
      table.data, s.historyColumn, s.featureVis.history];
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
  // The filter's statistics at this step, as the run's columns declare them.
  const runColumns = store.runEntry()?.columns ?? [];
  const st = data.stats ?? {};
  const statColumns = runColumns.filter((c) => st[c.name] !== undefined);
  const facts = factList(
    statColumns.map((c) => {
      const v = st[c.name] ?? NaN;
      const unit = headerUnit(c);
      const text = formatValue(c, v, { signed: v < 0 || c.first === "abs" });
      return [c.label, unit && present(v) ? `${text} ${unit}` : text, `stat-${c.name}`, c.description];
    }),
    "cvz-facts",
  );
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
  if (hasFeatureVis(s.names, store.layerEntry() ?? null)) weights.push(visualizationSection(s.featureVis.history, data));

  // The layer's columns as its table declares them (a counterfactual's among them), then any other
  // the run declares.
  /** @type {?import("../columns.js").Table} */
  const table = answerFor(s.analysis.table, data);
  const tableColumns = table?.columns ?? [];
  const known = new Set(tableColumns.map((/** @type {Column} */ c) => c.name));
  const histories = [historySection(data, [...tableColumns, ...runColumns.filter((c) => !known.has(c.name))], s, store)];

  const examples = { probe, maps: mapArray, mapImages: data.map_images, alpha: s.overlay };
  const analysis = [...impactSections(s.analysis.impact, data, examples, s.names, table), responseSection(s.analysis.perturbation, data, s.names)];
  // Opened from the Impact view, what the filter does for the model comes first.
  return s.mode === "impact" ? [facts, ...analysis, ...weights, ...histories] : [facts, ...weights, ...analysis, ...histories];
}

/**
 * The filter's feature visualisation at every logged step that has one, as a filmstrip: how the
 * input it wants most formed over training (the same seed at every log, so frames differ only
 * because the filter did), with the activation the frame at the slider's step reached.
 * @param {import("../store.js").KeyedLoad} load the /feature_vis_history answer @param {any} data the /filter payload
 * @returns {HTMLElement}
 */
function visualizationSection(load, data) {
  const box = section("Feature visualisation over the epochs", "detail-visualization");
  const answer = load.status === "ready" && load.data?.filter === data.filter && load.data?.layer === data.layer ? load.data : null;
  if (!answer) {
    box.append(el("p", "cvz-note", load.status === "error" ? `No visualisations: ${load.error}` : "Loading the visualisations…"));
    return box;
  }
  const i = answer.steps.filter((/** @type {number} */ st) => st <= data.step).length - 1;
  if (i >= 0) {
    const note = el("p", "cvz-note",
      `At step ${answer.steps[i]}: ${reachedText(answer.objective[i], answer.probe_best[i])}; the probe's best example reaches ` +
      `${formatNumber(answer.probe_best[i] ?? NaN)}. Each frame is the input optimised to drive this filter's mean activation ` +
      "(after its nonlinearity) up, in the model's input space; the outlined one is the slider's step.");
    note.dataset.testid = "filmstrip-note";
    box.append(note);
  }
  box.append(filmstrip(answer, data.step));
  return box;
}

/**
 * @param {Load} load the /impact answer @param {any} data the /filter payload
 * @param {import("./filterimpact.js").Examples} examples @param {import("../recordkeys.js").RecordNames} names
 * @param {?import("../columns.js").Table} table the layer's table at the step
 * @returns {HTMLElement[]}
 */
function impactSections(load, data, examples, names, table) {
  const answer = answerFor(load, data);
  if (answer) return impactViews(answer, data.filter, examples, data.per_class ?? null, names, table);
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
 * The filter's history of any one column over the steps it was logged: a select of the columns
 * (by label, in their groups) and its chart, with its interval shaded where it has one.
 * @param {any} data the /filter payload @param {Column[]} runColumns the run's declared columns
 * @param {State} s @param {import("../store.js").Store} store
 * @returns {HTMLElement}
 */
function historySection(data, runColumns, s, store) {
  /** @type {Record<string, {steps: number[], values: Array<?number>, ci?: Array<[?number, ?number]>}>} */
  const histories = data.column_history ?? {};
  const columns = inGroupOrder(runColumns.filter((c) => histories[c.name]));
  const steps = Math.max(0, ...columns.map((c) => histories[c.name].steps.length));
  const box = section(`History over ${steps} logged steps`, "detail-history");
  if (!columns.length) {
    box.append(el("p", "cvz-note", "No history of this filter's columns was logged."));
    return box;
  }
  // The column chosen here; else, opened from the Impact table, the column it sorts by; else the first.
  const impact = s.mode === "impact";
  const column =
    columns.find((c) => c.name === s.historyColumn) ??
    (impact ? columns.find((c) => c.name === s.impactSort.metric) ?? defaultSortColumn(columns) : null) ??
    columns[0];
  const picker = labelledSelect("Column", "history-column", (name) => store.setHistoryColumn(name));
  picker.element.classList.add("cvz-inline-field");
  const select = picker.select;
  for (const { group, columns: inGroup } of groupColumns(columns)) {
    const optgroup = document.createElement("optgroup");
    optgroup.label = groupTitle(group);
    for (const c of inGroup) {
      const option = document.createElement("option");
      option.value = c.name;
      option.textContent = c.label;
      option.title = c.description;
      optgroup.append(option);
    }
    select.append(optgroup);
  }
  select.value = column.name;
  const history = histories[column.name];
  const ci = history.ci;
  const unit = headerUnit(column);
  const signed = history.values.some((v) => v !== null && v < 0) || column.first === "abs";
  const described = el("p", "cvz-note", column.description);
  described.dataset.testid = "history-description";
  box.append(picker.element, described);
  box.append(
    lineChart({
      title: `${column.label} of filter #${data.filter}`,
      x: history.steps,
      series: [{ label: column.label, values: history.values }],
      xLabel: "step",
      yLabel: unit ? `${column.label} (${unit})` : column.label,
      format: (v) => formatValue(column, v, { signed }),
      current: data.step,
      percent: column.format === "percent",
      testid: "history-chart",
      band: ci ? { lo: ci.map((b) => b[0]), hi: ci.map((b) => b[1]), label: "95% interval" } : undefined,
    }),
  );
  const chart = /** @type {HTMLElement} */ (box.lastElementChild);
  chart.dataset.column = column.name;
  chart.dataset.values = JSON.stringify(history.values); // what is drawn, for tests and scripts
  return box;
}
