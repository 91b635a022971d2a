// One filter in detail: its input-channel slices (raw and BatchNorm-folded), its activation
// maps on every probe image kept (over the probe input), and its history over every logged step.

import { DIVERGING, SEQUENTIAL } from "../colormap.js";
import { itemCanvas, overlayCanvas, scaleOf, signalCanvas } from "../raster.js";
import { along, decodeWire } from "../wire.js";
import { el, formatNumber, formatPercent } from "./controls.js";
import { lineChart } from "./chart.js";
import { drawLegend } from "./layer.js";

/**
 * @typedef {import("../wire.js").NdArray} NdArray
 * @typedef {import("../store.js").State} State
 */

/** @param {string} title @param {string} testid */
function section(title, testid) {
  const box = el("section", "cvz-detail-section");
  box.dataset.testid = testid;
  box.append(el("h4", "cvz-detail-heading", title));
  return box;
}

/** Pixels per value so a slice is about `target` CSS px on its longer side. @param {number[]} k @param {number} target */
function zoomFor(k, target) {
  return Math.max(2, Math.floor(target / Math.max(...k)));
}

/**
 * Every input-channel slice of a kernel, on one diverging scale.
 * 1-D kernels also get a line plot of up to 8 channels.
 * @param {NdArray} kernel (in_channels, ...kernel_size)
 * @returns {HTMLElement[]}
 */
function sliceViews(kernel) {
  const [channels, ...k] = kernel.shape;
  const scale = scaleOf(kernel.values, "diverging");
  const target = channels <= 8 ? 56 : channels <= 64 ? 32 : 20;
  const zoom = zoomFor(k.length === 3 ? k.slice(1) : k, target);
  const wall = el("div", `cvz-slices cvz-slices-${k.length}d`);
  for (let c = 0; c < channels; c++) {
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
      }),
    );
  }
  return views;
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
  const style = getComputedStyle(document.documentElement);
  const colors = {
    input: style.getPropertyValue("--cvz-faint").trim() || "#9e9e9e",
    activation: style.getPropertyValue("--cvz-chart-line").trim() || "#1976d2",
  };
  for (let i = 0; i < maps.shape[0]; i++) {
    const map = along(maps, i);
    const id = imageIds[i] ?? i;
    // The probe is this layer's input only when it has the same number of spatial dims (a 1-D
    // layer inside an image model sees something else): otherwise the map is drawn alone.
    const input = probe && id < probe.shape[0] && probe.shape.length - 2 === dims ? along(probe, id) : null;
    const cell = el("figure", "cvz-map");
    cell.dataset.testid = "detail-map";
    if (dims === 1) {
      const signal = input ?? { values: new Float32Array(0), shape: [0, 0] };
      cell.append(signalCanvas(signal, map.values, scale, SEQUENTIAL, 300, 64, colors));
    } else if (dims === 2) {
      cell.append(input ? overlayCanvas(input, map, scale, SEQUENTIAL, alpha, 112) : itemCanvas(map.values, [1, ...map.shape], scale, SEQUENTIAL, zoomFor(map.shape, 112)));
    } else {
      // Conv3d: a row of depth slices, each over the input slice at the same relative depth.
      const row = el("div", "cvz-depth-row");
      const [depth] = map.shape;
      for (let d = 0; d < depth; d++) {
        const slice = along(map, d);
        if (input) {
          const inDepth = input.shape[1];
          const z = Math.min(inDepth - 1, Math.floor(((d + 0.5) * inDepth) / depth));
          const channels = input.shape[0];
          const hw = input.shape[2] * input.shape[3];
          const values = new Float32Array(channels * hw);
          for (let c = 0; c < channels; c++) values.set(input.values.subarray((c * inDepth + z) * hw, (c * inDepth + z + 1) * hw), c * hw);
          row.append(overlayCanvas({ values, shape: [channels, input.shape[2], input.shape[3]] }, slice, scale, SEQUENTIAL, alpha, 56));
        } else {
          row.append(itemCanvas(slice.values, [1, ...slice.shape], scale, SEQUENTIAL, zoomFor(slice.shape, 56)));
        }
      }
      cell.append(row);
    }
    const label = labels && labels[id] !== undefined ? `image #${id} · label ${labels[id]}` : `image #${id}`;
    cell.append(el("figcaption", "cvz-map-label", label));
    wall.append(cell);
  }
  const legend = el("div", "cvz-legend");
  drawLegend(legend, "sequential", scale, "one scale for all images");
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

  /** Redraw only when what is shown changes. */
  let shown = { detail: /** @type {any} */ (null), probe: /** @type {any} */ (null), overlay: -1 };
  /** @type {{data: any, array: ?NdArray}} */
  let probeDecoded = { data: null, array: null };

  store.subscribe((s) => {
    panel.hidden = s.phase !== "ready" || s.filter === null;
    if (panel.hidden) {
      shown = { detail: null, probe: null, overlay: -1 };
      return;
    }
    title.textContent = `Filter #${s.filter}`;
    sub.textContent = `layer ${s.layer} · run ${s.run} · step ${s.step}`;
    panel.dataset.loading = String(s.detail.status === "loading");
    if (s.detail.status === "error") {
      body.replaceChildren(el("p", "cvz-note", `Could not load this filter: ${s.detail.error}`));
      shown.detail = null;
      return;
    }
    const data = s.detail.data;
    if (!data) {
      if (shown.detail === null) body.replaceChildren(el("p", "cvz-note", `Loading filter #${s.filter}…`));
      return;
    }
    const probeLoad = s.probes[s.run];
    const probeData = probeLoad?.status === "ready" ? probeLoad.data : null;
    if (shown.detail === data && shown.probe === probeData && shown.overlay === s.overlay) return;
    shown = { detail: data, probe: probeData, overlay: s.overlay };
    if (probeDecoded.data !== probeData) probeDecoded = { data: probeData, array: probeData ? decodeWire(probeData.images) : null };
    panel.dataset.filter = String(data.filter);
    panel.dataset.step = String(data.step);
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
  const facts = el("dl", "cvz-facts");
  /** @type {Array<[string, string]>} */
  const rows = [
    ["L2 norm", formatNumber(st.l2)],
    ["mean |w|", formatNumber(st.mean_abs)],
    ["drift vs previous", formatNumber(st.cosine_distance_prev)],
    ["drift vs first", formatNumber(st.cosine_distance_first)],
    ["norm change vs previous", formatPercent(st.norm_change_prev)],
    ["act mean", formatNumber(st.act_mean)],
    ["act max", formatNumber(st.act_max)],
    ["positive fraction", st.act_frac_pos === undefined ? "—" : formatPercent(st.act_frac_pos).replace("+", "")],
  ];
  if (st.dead) rows.push(["status", "dead: weights ≈ 0"]);
  for (const [k, v] of rows) facts.append(el("dt", "", k), el("dd", "", v));
  const out = [facts];

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
  out.push(slices);

  if (data.effective) {
    const info = store.layerEntry()?.info;
    const effective = section("Effective (BatchNorm folded)", "detail-effective");
    effective.append(
      el("p", "cvz-note", `What the filter computes in eval mode: weights × γ/σ of BatchNorm ${info?.batchnorm ?? ""}.`),
      ...sliceViews(decodeWire(data.effective)),
    );
    out.push(effective);
  }

  const maps = section("Activations on the probe", "detail-maps");
  if (data.maps) {
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
    const array = decodeWire(data.maps);
    const overlays = probe !== null && array.shape.length >= 3 && probe.shape.length - 1 === array.shape.length;
    if (overlays) maps.append(alpha);
    maps.append(...mapViews(array, data.map_images, probe, labels, s.overlay));
  } else {
    maps.append(el("p", "cvz-note", "No activation maps: this run was logged without a probe."));
  }
  out.push(maps);

  const h = data.history;
  const history = section(`History over ${h.steps.length} logged steps`, "detail-history");
  const charts = el("div", "cvz-charts");
  charts.append(
    lineChart({ title: "L2 norm", x: h.steps, series: [{ label: "L2 norm", values: h.l2 }], current: data.step, testid: "history-chart" }),
    lineChart({
      title: "Drift per step (cosine distance to previous)",
      x: h.steps,
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
      lineChart({ title: "Mean activation", x: h.steps, series: [{ label: "act mean", values: h.act_mean }], current: data.step, testid: "history-chart" }),
    );
  }
  history.append(charts);
  out.push(history);
  return out;
}
