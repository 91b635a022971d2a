// The filter map: the current layer's filters as points in 2-D (from their response profiles on the
// probe, PCA by default), at the slider's step, each with a faint trail over the steps before it.
// Every step's map is aligned to the one before (server side), so the slider moves points rather
// than redrawing a new map. Points are coloured by a per-filter metric; a click opens the filter.

import { SEQUENTIAL, cssGradient } from "../colormap.js";
import { answerFor } from "../analysis.js";
import { defaultSortColumn, formatValue, groupTitle, headerText, holdsChanges, shownColumns } from "../columns.js";
import { decodeWire } from "../wire.js";
import { ckaColour } from "./cka.js";
import { formatNumber } from "../numeric.js";
import { el, labelledSelect, svg, viewCard } from "./controls.js";
import { dataCsvButton, pngButton, setExportParts } from "./download.js";

const WIDTH = 560;
const HEIGHT = 420;
const PAD = 16;


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
 * Screen position of every value in `points` (steps, filters, 2), in one frame for all steps.
 * @param {Float32Array} points @returns {(x: number, y: number) => [number, number]}
 */
function frameOf(points) {
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i + 1 < points.length; i += 2) {
    if (!Number.isFinite(points[i]) || !Number.isFinite(points[i + 1])) continue;
    x0 = Math.min(x0, points[i]);
    x1 = Math.max(x1, points[i]);
    y0 = Math.min(y0, points[i + 1]);
    y1 = Math.max(y1, points[i + 1]);
  }
  const span = Math.max(x1 - x0, y1 - y0, 1e-12); // one scale on both axes: distances stay true
  const scale = Math.min(WIDTH, HEIGHT) - 2 * PAD;
  const [cx, cy] = [(x0 + x1) / 2, (y0 + y1) / 2];
  return (x, y) => [WIDTH / 2 + ((x - cx) / span) * scale, HEIGHT / 2 - ((y - cy) / span) * scale];
}

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountEmbedding(root, store) {
  const { card, head, title, sub } = viewCard("cvz-card cvz-embedding", "embedding-view");
  const controls = el("div", "cvz-compare-controls");
  const method = labelledSelect("Method", "embedding-method", (v) =>
    store.setEmbedding({ method: /** @type {"pca"|"umap"|"tsne"} */ (v) }),
  );
  const color = labelledSelect("Colour by", "embedding-color", (v) => store.setEmbedding({ color: v }));
  const legend = el("div", "cvz-legend");
  controls.append(method.element, color.element, legend);
  const message = el("p", "cvz-note");
  message.dataset.testid = "embedding-message";
  const plot = svg("svg", { width: WIDTH, height: HEIGHT, viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img" });
  plot.dataset.testid = "embedding-plot";
  plot.setAttribute("aria-label", "The layer's filters as points; nearby filters respond alike on the probe");
  const readout = el("div", "cvz-chart-title", " ");
  readout.dataset.testid = "embedding-readout";
  /** The points at the slider's step and their colour, for the CSV. */
  let csvRows = () => /** @type {string[][]} */ ([]);
  const tools = el("div", "cvz-card-tools cvz-export-tools");
  tools.append(pngButton(() => plot, "filter-map"), dataCsvButton(card, "filter-map", () => csvRows()));
  head.append(tools);
  card.append(head, controls, message, plot, readout);
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
    method.setOptions(
      [
        { value: "pca", text: "PCA" },
        { value: "umap", text: "UMAP" },
        { value: "tsne", text: "t-SNE" },
      ],
      s.embedding.method,
    );
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
    const now = [load.data, s.step, s.filter, values];
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
    const at = frameOf(points.subarray(0, steps * filters * 2));
    const xy = (/** @type {number} */ k, /** @type {number} */ f) => at(points[2 * (k * filters + f)], points[2 * (k * filters + f) + 1]);

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

    const trails = svg("g", { fill: "none", stroke: "currentColor", "stroke-opacity": 0.25, "stroke-width": 1 });
    const dots = svg("g", {});
    for (let f = 0; f < filters; f++) {
      if (t > 0) {
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
      const says = `Filter #${f} · ${name}: ${text(values[f])}`;
      const tip = svg("title", {});
      tip.textContent = says;
      dot.append(tip);
      dot.addEventListener("mouseenter", () => (readout.textContent = says));
      dot.addEventListener("click", () => store.selectFilter(f));
      dot.addEventListener("keydown", (e) => {
        if (/** @type {KeyboardEvent} */ (e).key === "Enter") store.selectFilter(f);
      });
      dots.append(dot);
    }
    plot.replaceChildren(trails, dots);
  });
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
