// The filter map: the current layer's filters as points in 2-D (from their response profiles on the
// probe, PCA by default), at the slider's step, optionally with a light trail over the steps before
// it. Every step's map is aligned to the one before (server side), so the slider moves points
// rather than redrawing a new map. The plot fills its panel, each axis scaled to the step's points
// and labelled with its component (and for PCA its share of variance); points are coloured by a
// per-filter column; hovering reads a point out at the cursor and a click opens the filter.

import { SEQUENTIAL, cssGradient } from "../colormap.js";
import { answerFor } from "../analysis.js";
import { defaultSortColumn, formatValue, groupTitle, headerText, holdsChanges, shownColumns } from "../columns.js";
import { decodeWire } from "../wire.js";
import { ckaColour } from "./cka.js";
import { formatNumber } from "../numeric.js";
import { axisTicks, exponentText } from "../ticks.js";
import { el, labelledSelect, svg, viewCard } from "./controls.js";
import { dataCsvButton, pngButton, setExportParts } from "./download.js";

/** Plot margins: room for the y axis' ticks and label on the left, the x axis' below. */
const MARGIN = { left: 58, right: 14, top: 10, bottom: 40 };
const MIN_WIDTH = 420;
// The most intervals over the data: the round step (ticks.js) is at least span / TICKS, so 4-8 ticks show.
const TICKS = 8;
/** What each method's axes are called. */
const AXIS_NAMES = { pca: "PC", umap: "UMAP", tsne: "t-SNE" };
const METHOD_NAMES = { pca: "PCA", umap: "UMAP", tsne: "t-SNE" };


/**
 * The index of the last map at or before `step`; -1 when every map is later.
 * @param {number[]} steps @param {number} step
 */
function stepIndex(steps, step) {
  let t = -1;
  steps.forEach((x, i) => {
    if (x <= step) t = i;
  });
  return t;
}

/**
 * The plot's frame for one step's points (filters, 2): each axis scaled to its own data (padded by
 * 5%), so the points fill the plot whatever the components' variances.
 * @param {Float32Array} xy @param {number} width @param {number} height
 */
function frameOf(xy, width, height) {
  /** @param {number} axis @returns {[number, number]} */
  const range = (axis) => {
    let [lo, hi] = [Infinity, -Infinity];
    for (let i = axis; i < xy.length; i += 2) {
      if (!Number.isFinite(xy[i])) continue;
      lo = Math.min(lo, xy[i]);
      hi = Math.max(hi, xy[i]);
    }
    if (!Number.isFinite(lo)) return [0, 1];
    const pad = Math.max((hi - lo) * 0.05, 1e-9);
    return [lo - pad, hi + pad];
  };
  const [x, y] = [range(0), range(1)];
  const [w, h] = [width - MARGIN.left - MARGIN.right, height - MARGIN.top - MARGIN.bottom];
  return {
    x, y,
    /** @param {number} vx @param {number} vy @returns {[number, number]} */
    at: (vx, vy) => [MARGIN.left + ((vx - x[0]) / (x[1] - x[0])) * w, MARGIN.top + (1 - (vy - y[0]) / (y[1] - y[0])) * h],
  };
}

/**
 * Round ticks (ticks.js) inside the plot's range [lo, hi]: the axis is scaled to the data, so the
 * outer round ticks that lie beyond it are left out.
 * @param {number} lo @param {number} hi
 * @returns {{ticks: number[], labels: string[], exponent: number}}
 */
export function mapTicks(lo, hi) {
  if (!(hi > lo) || !Number.isFinite(hi - lo)) return { ticks: [], labels: [], exponent: 0 };
  const axis = axisTicks(lo, hi, { count: TICKS });
  const inside = axis.ticks.map((t, i) => i).filter((i) => axis.ticks[i] >= lo && axis.ticks[i] <= hi);
  return { ticks: inside.map((i) => axis.ticks[i]), labels: inside.map((i) => axis.labels[i]), exponent: axis.exponent };
}

/**
 * An axis' title: the component, and its share of the step's profile variance when known (PCA).
 * @param {string} method @param {number} axis 0 or 1 @param {?number} share
 */
function axisTitle(method, axis, share) {
  const name = `${AXIS_NAMES[/** @type {keyof typeof AXIS_NAMES} */ (method)] ?? method} ${axis + 1}`;
  if (share === null || !Number.isFinite(share)) return name;
  const percent = 100 * share;
  return `${name} · ${percent >= 10 ? percent.toFixed(0) : percent >= 0.1 ? percent.toFixed(1) : "<0.1"}% of variance (axes scaled separately)`;
}

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountEmbedding(root, store) {
  const { card, head, title, sub } = viewCard("cvz-card cvz-embedding", "embedding-view");
  const controls = el("div", "cvz-compare-controls");
  const method = labelledSelect("Method", "embedding-method", (v) =>
    store.setEmbedding({ method: /** @type {"pca"|"umap"|"tsne"} */ (v) }),
  );
  const color = labelledSelect("Colour by", "embedding-color", (v) => store.setEmbedding({ color: v }));
  const trailsBox = el("label", "cvz-check");
  const trailsInput = /** @type {HTMLInputElement} */ (el("input"));
  trailsInput.type = "checkbox";
  trailsInput.dataset.testid = "embedding-trails";
  trailsInput.addEventListener("change", () => store.setEmbedding({ trails: trailsInput.checked }));
  trailsBox.append(trailsInput, document.createTextNode(" Trails over earlier steps"));
  const legend = el("div", "cvz-legend");
  controls.append(method.element, color.element, trailsBox, legend);
  const message = el("p", "cvz-note");
  message.dataset.testid = "embedding-message";
  const plot = svg("svg", { role: "img" });
  plot.dataset.testid = "embedding-plot";
  plot.setAttribute("aria-label", "The layer's filters as points; nearby filters respond alike on the probe");
  // The readout follows the cursor over the plot.
  const readout = el("div", "cvz-tooltip cvz-map-readout");
  readout.dataset.testid = "embedding-readout";
  readout.hidden = true;
  const stage = el("div", "cvz-map-stage");
  stage.append(plot, readout);
  /** The points at the slider's step and their colour, for the CSV. */
  let csvRows = () => /** @type {string[][]} */ ([]);
  const tools = el("div", "cvz-card-tools cvz-export-tools");
  tools.append(pngButton(() => plot, "filter-map"), dataCsvButton(card, "filter-map", () => csvRows()));
  head.append(tools);
  card.append(head, controls, message, stage);
  root.append(card);

  /** @type {{data: any, points: ?Float32Array}} */
  let decoded = { data: null, points: null };
  let drawn = /** @type {any[]} */ ([]);

  store.subscribe((s) => {
    card.hidden = s.phase !== "ready" || s.mode !== "embedding";
    if (card.hidden) {
      drawn = [];
      return;
    }
    const { load } = s.embedding;
    // Colour by any column of the layer: the table's at the slider's step once it is there.
    const table = answerFor(s.analysis.table, { run: s.run, layer: s.layer });
    const columns = table ? shownColumns(table) : (store.runEntry()?.columns ?? []);
    const colour = columns.find((c) => c.name === s.embedding.color) ?? defaultSortColumn(columns);
    title.textContent = `Filter map · layer ${s.layer}`;
    sub.textContent = `run ${s.run}: filters that respond alike on the probe lie close; trails show where each came from`;
    // Only what the server can compute: UMAP and t-SNE need their packages there.
    method.setOptions(
      s.embeddingMethods.map((m) => ({ value: m, text: METHOD_NAMES[/** @type {keyof typeof METHOD_NAMES} */ (m)] ?? m })),
      s.embedding.method,
    );
    trailsInput.checked = s.embedding.trails;
    color.setOptions(
      columns.map((c) => ({ value: c.name, text: `${groupTitle(c.group)} · ${headerText(c)}` })),
      colour?.name ?? "",
    );
    color.select.title = colour?.description ?? "";
    card.dataset.loading = String(load.status === "loading");
    if (load.status === "error" || !load.data) {
      message.textContent = load.status === "error" ? `Could not map the filters: ${load.error}` : "Mapping the filters…";
      message.hidden = false;
      plot.replaceChildren();
      drawn = [];
      return;
    }
    const current = answerFor(s.analysis.table, { run: s.run, layer: s.layer, step: s.step });
    const values = metricValues(current, colour?.name ?? "", load.data?.points.shape[1] ?? 0);
    const width = Math.max(MIN_WIDTH, Math.floor(card.clientWidth - 32));
    const height = Math.round(Math.min(520, Math.max(300, width * 0.42)));
    const now = [load.data, s.step, s.filter, values, s.embedding.trails, width];
    if (now.every((x, i) => (i === 3 ? sameValues(x, drawn[i]) : x === drawn[i]))) return;
    drawn = now;
    const data = load.data;
    if (decoded.data !== data) decoded = { data, points: decodeWire(data.points).values };
    const points = /** @type {Float32Array} */ (decoded.points);
    const [steps, filters] = [data.steps.length, data.points.shape[1]];
    const t = stepIndex(data.steps, s.step);
    plot.dataset.step = String(t >= 0 ? data.steps[t] : -1);
    plot.dataset.filters = String(filters);
    if (t < 0) {
      message.textContent = `No map at step ${s.step}: the first is at step ${data.steps[0]}.`;
      message.hidden = false;
      plot.replaceChildren();
      return;
    }
    // A large model's layers take turns at response profiles: say when the map is an earlier step's.
    message.textContent =
      data.steps[t] === s.step
        ? ""
        : `Map from step ${data.steps[t]}, this layer's last response profiles before step ${s.step}: a large model's layers take turns (ConvViz's response_filters).`;
    message.hidden = !message.textContent;
    const frame = frameOf(points.subarray(2 * t * filters, 2 * (t + 1) * filters), width, height);
    const xy = (/** @type {number} */ k, /** @type {number} */ f) => frame.at(points[2 * (k * filters + f)], points[2 * (k * filters + f) + 1]);
    plot.setAttribute("width", String(width));
    plot.setAttribute("height", String(height));
    plot.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const shares = data.variance_share ? decodeWire(data.variance_share).values : null;
    const mapMethod = data.method ?? s.embedding.method;

    const finite = values.filter((v) => v !== null && Number.isFinite(v));
    const [lo, hi] = finite.length ? [Math.min(...finite), Math.max(...finite)] : [0, 1];
    const unit = (/** @type {?number} */ v) => (v === null || !Number.isFinite(v) ? null : hi > lo ? (v - lo) / (hi - lo) : 0.5);
    const bar = el("span", "cvz-legend-bar");
    bar.style.background = cssGradient(SEQUENTIAL);
    const name = colour ? headerText(colour) : "no column";
    const signed = holdsChanges(values.map((v) => v ?? 0));
    const text = (/** @type {?number} */ v) => (colour ? formatValue(colour, v, { signed }) : formatNumber(v));
    setExportParts(card, [s.run, s.layer, `step${data.steps[t]}`, data.method ?? s.embedding.method]);
    csvRows = () => [
      ["filter", "x", "y", ...(colour ? [colour.name] : [])],
      ...Array.from({ length: filters }, (_, f) => [
        String(f),
        ...[points[2 * (t * filters + f)], points[2 * (t * filters + f) + 1]].map((v) => (Number.isFinite(v) ? String(v) : "")),
        ...(colour ? [values[f] === null || !Number.isFinite(values[f]) ? "" : String(values[f])] : []),
      ]),
    ];
    legend.replaceChildren(
      el("span", "cvz-legend-end", finite.length ? text(lo) : "—"),
      bar,
      el("span", "cvz-legend-end", finite.length ? text(hi) : "—"),
      el("span", "cvz-legend-note", finite.length ? name : `${name}: not available at this step (grey)`),
    );

    const axes = drawAxes(frame, width, height, [0, 1].map((a) => axisTitle(mapMethod, a, shares ? shares[2 * t + a] : null)));
    // Earlier steps may lie outside this step's frame: their trails stop at the plot's edge.
    const clip = svg("clipPath", { id: "cvz-map-clip" });
    clip.append(svg("rect", { x: MARGIN.left, y: MARGIN.top, width: width - MARGIN.left - MARGIN.right, height: height - MARGIN.top - MARGIN.bottom }));
    const trails = svg("g", { fill: "none", stroke: "currentColor", "stroke-opacity": 0.12, "stroke-width": 0.75, "clip-path": "url(#cvz-map-clip)" });
    const dots = svg("g", {});
    /** @param {Event} e @param {string} says */
    const showAt = (e, says) => {
      const box = stage.getBoundingClientRect();
      const m = /** @type {MouseEvent} */ (e);
      readout.textContent = says;
      readout.hidden = false;
      const left = m.clientX - box.left + 14;
      readout.style.left = `${Math.min(left, box.width - 200)}px`;
      readout.style.top = `${m.clientY - box.top + 14}px`;
    };
    for (let f = 0; f < filters; f++) {
      if (t > 0 && s.embedding.trails) {
        const path = [];
        for (let k = 0; k <= t; k++) path.push(xy(k, f).map((c) => c.toFixed(1)).join(","));
        trails.append(svg("polyline", { points: path.join(" ") }));
      }
      const [x, y] = xy(t, f);
      const dot = svg("circle", {
        cx: x.toFixed(1), cy: y.toFixed(1), r: f === s.filter ? 7 : 5,
        fill: ckaColour(unit(values[f])), stroke: f === s.filter ? "var(--cvz-accent, #e8710a)" : "#fff",
        "stroke-width": f === s.filter ? 2.5 : 1, tabindex: 0, cursor: "pointer",
      });
      dot.dataset.testid = "embedding-point";
      dot.dataset.filter = String(f);
      const coords = `(${formatNumber(points[2 * (t * filters + f)])}, ${formatNumber(points[2 * (t * filters + f) + 1])})`;
      const says = `Filter #${f} · ${name}: ${text(values[f])} · at ${coords}; click for its detail`;
      dot.setAttribute("aria-label", says);
      dot.addEventListener("mousemove", (e) => showAt(e, says));
      dot.addEventListener("mouseleave", () => (readout.hidden = true));
      dot.addEventListener("click", () => store.selectFilter(f));
      dot.addEventListener("keydown", (e) => {
        if (/** @type {KeyboardEvent} */ (e).key === "Enter") store.selectFilter(f);
      });
      dots.append(dot);
    }
    plot.replaceChildren(clip, axes, trails, dots);
  });
}

/**
 * The plot's axes: a frame, round ticks with their values, and each axis' title.
 * @param {ReturnType<typeof frameOf>} frame @param {number} width @param {number} height
 * @param {string[]} titles x then y
 */
function drawAxes(frame, width, height, titles) {
  const g = svg("g", { "font-size": 11, fill: "currentColor" });
  const [left, right, top, bottom] = [MARGIN.left, width - MARGIN.right, MARGIN.top, height - MARGIN.bottom];
  g.append(svg("rect", { x: left, y: top, width: right - left, height: bottom - top, fill: "none", stroke: "currentColor", "stroke-opacity": 0.3 }));
  /** @param {string} text @param {Record<string, string|number>} attrs @param {string} [testid] */
  const label = (text, attrs, testid) => {
    const t = svg("text", attrs);
    t.textContent = text;
    if (testid) t.dataset.testid = testid;
    g.append(t);
  };
  // Round ticks, a darker line at zero where an axis' values change sign, a shared power of ten in its title.
  const [xs, ys] = [mapTicks(frame.x[0], frame.x[1]), mapTicks(frame.y[0], frame.y[1])];
  xs.ticks.forEach((v, i) => {
    const [x] = frame.at(v, frame.y[0]);
    if (v === 0) g.append(svg("line", { x1: x, x2: x, y1: top, y2: bottom, stroke: "currentColor", "stroke-opacity": 0.25 }));
    g.append(svg("line", { x1: x, x2: x, y1: bottom, y2: bottom + 4, stroke: "currentColor", "stroke-opacity": 0.5 }));
    label(xs.labels[i], { x, y: bottom + 16, "text-anchor": "middle" }, "embedding-x-tick");
  });
  ys.ticks.forEach((v, i) => {
    const [, y] = frame.at(frame.x[0], v);
    if (v === 0) g.append(svg("line", { x1: left, x2: right, y1: y, y2: y, stroke: "currentColor", "stroke-opacity": 0.25 }));
    g.append(svg("line", { x1: left - 4, x2: left, y1: y, y2: y, stroke: "currentColor", "stroke-opacity": 0.5 }));
    label(ys.labels[i], { x: left - 6, y: y + 4, "text-anchor": "end" }, "embedding-y-tick");
  });
  /** A title with its axis' power of ten, if any. @param {string} title @param {number} exponent */
  const titled = (title, exponent) => (exponent ? `${title} (${exponentText(exponent)})` : title);
  label(titled(titles[0], xs.exponent), { x: (left + right) / 2, y: height - 6, "text-anchor": "middle" }, "embedding-x-title");
  label(titled(titles[1], ys.exponent), { x: 14, y: (top + bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(top + bottom) / 2})` }, "embedding-y-title");
  return g;
}

/**
 * The colour column's value per filter at the slider's step, from the layer's table there; null
 * where not (yet) known.
 * @param {?import("../columns.js").Table} table @param {string} name @param {number} count
 * @returns {Array<?number>}
 */
function metricValues(table, name, count) {
  const a = table?.values[name];
  return Array.from({ length: count }, (_, f) => {
    const v = a && a.shape.length === 1 ? Number(a.values[f]) : NaN;
    return Number.isFinite(v) ? v : null;
  });
}

/** @param {Array<?number>} a @param {Array<?number>|undefined} b */
function sameValues(a, b) {
  return b !== undefined && a.length === b.length && a.every((v, i) => v === b[i]);
}
