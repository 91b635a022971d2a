// The Similarity view: debiased linear CKA on the probe, as three heatmaps. Layer × layer between
// run A at the slider's step and run B at a chosen step (which layers represent the probe alike);
// the current layer's step × step (when did it stop changing?); and per layer, CKA to the final
// step over training (which layers settle first). Each heatmap's colours span the values it shows
// (its own legend), so 0.86 and 0.99 look different; hover gives the 95% interval.

import { SEQUENTIAL, cssGradient } from "../colormap.js";
import { formatFixed } from "../numeric.js";
import { el, labelledSelect, svg, viewCard } from "./controls.js";
import { dataCsvButton, pngButton, setExportParts } from "./download.js";

/** Viridis colour of a CKA value, clamped to [0, 1]; grey when missing. @param {?number} v */
export function ckaColour(v) {
  if (v === null || !Number.isFinite(v)) return "#888";
  const k = 4 * Math.round(Math.min(1, Math.max(0, v)) * 255);
  return `rgb(${SEQUENTIAL[k]},${SEQUENTIAL[k + 1]},${SEQUENTIAL[k + 2]})`;
}

/**
 * The colour range of a heatmap: its finite values' min and max, widened to 0.02 when they (nearly)
 * coincide, so a uniform map reads as one colour rather than an extreme.
 * @param {Array<?number>} values @returns {{lo: number, hi: number}}
 */
export function colourRange(values) {
  const finite = /** @type {number[]} */ (values.filter((v) => v !== null && Number.isFinite(v)));
  if (!finite.length) return { lo: 0, hi: 1 };
  let [lo, hi] = [Math.min(...finite), Math.max(...finite)];
  if (hi - lo < 0.02) [lo, hi] = [(lo + hi) / 2 - 0.01, (lo + hi) / 2 + 0.01];
  return { lo, hi };
}

/**
 * @typedef {{testid: string, title: string, values: Array<?number>, lo: Array<?number>, hi: Array<?number>,
 *   images: number, rowLabels: string[], colLabels: string[], rowName: string, colName: string,
 *   markRow?: number, markCol?: number}} HeatmapSpec
 *   values: (rows, cols) row-major, and lo / hi their 95% interval alike; images: how many probe
 *   images the CKA used; markRow / markCol: a row and a column outlined (the current one)
 */

/**
 * An SVG heatmap with row and column labels, the value in each cell when cells are large enough,
 * and a readout of the cell under the cursor.
 * @param {HeatmapSpec} spec @returns {HTMLElement}
 */
export function heatmap(spec) {
  const rows = spec.rowLabels.length;
  const cols = spec.colLabels.length;
  const cell = Math.max(4, Math.min(36, Math.floor(360 / Math.max(1, rows, cols))));
  const every = Math.ceil(12 / cell); // label every k-th row and column so labels never overlap
  // Room on the left for the longest row label and the rotated row-axis title beside it.
  const pad = { left: 24 + 6 * Math.max(2, ...spec.rowLabels.map((l) => l.length)), top: 6, bottom: 30 };
  const width = pad.left + cols * cell + 4;
  const height = pad.top + rows * cell + pad.bottom;
  const figure = el("figure", "cvz-chart cvz-heatmap");
  figure.dataset.testid = spec.testid;
  figure.dataset.rows = String(rows);
  figure.dataset.cols = String(cols);
  const caption = el("figcaption", "cvz-chart-title", spec.title);
  // PNG: the heatmap as drawn; CSV: its numbers, a row per row label, a column per column label.
  const part = spec.testid.replace(/^cka-/, "cka_");
  caption.append(
    pngButton(() => figure, part),
    dataCsvButton(figure, part, () => [
      [`${spec.rowName} \\ ${spec.colName}`, ...spec.colLabels],
      ...spec.rowLabels.map((label, r) => [
        label,
        ...spec.colLabels.map((_, c) => {
          const v = spec.values[r * cols + c];
          return v === null || v === undefined || !Number.isFinite(v) ? "" : String(v);
        }),
      ]),
    ]),
  );
  figure.append(caption);
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  root.setAttribute("aria-label", spec.title);
  const readout = el("div", "cvz-chart-title", " ");
  readout.dataset.testid = `${spec.testid}-readout`;

  const withText = cell >= 28;
  const range = colourRange(spec.values);
  const unit = (/** @type {?number} */ v) => (v === null || !Number.isFinite(v) ? null : (v - range.lo) / (range.hi - range.lo));
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const at = r * cols + c;
      const v = spec.values[at];
      const x = pad.left + c * cell;
      const y = pad.top + r * cell;
      const rect = svg("rect", { x, y, width: cell, height: cell, fill: ckaColour(unit(v)), "data-row": r, "data-col": c });
      rect.dataset.testid = `${spec.testid}-cell`;
      rect.dataset.value = String(v);
      const interval = Number.isFinite(spec.lo[at] ?? NaN)
        ? `, 95% interval ${formatFixed(spec.lo[at])} to ${formatFixed(spec.hi[at])} (${spec.images} images)`
        : ` (${spec.images} images: too few for an interval)`;
      const says = `${spec.rowName} ${spec.rowLabels[r]} · ${spec.colName} ${spec.colLabels[c]}: CKA ${formatFixed(v)}${interval}`;
      const tip = svg("title", {});
      tip.textContent = says;
      rect.append(tip);
      rect.addEventListener("mouseenter", () => (readout.textContent = says));
      root.append(rect);
      if (withText) {
        const t = svg("text", {
          x: x + cell / 2, y: y + cell / 2 + 4, "text-anchor": "middle", "font-size": 10,
          fill: (unit(v) ?? 0) > 0.6 ? "#000" : "#fff", "pointer-events": "none",
        });
        t.textContent = formatFixed(v);
        root.append(t);
      }
    }
  }
  /** @param {string} text @param {Record<string, string|number>} attrs @param {string} testid */
  const label = (text, attrs, testid) => {
    const t = svg("text", { "font-size": 10, fill: "currentColor", ...attrs });
    t.dataset.testid = testid;
    t.textContent = text;
    root.append(t);
  };
  spec.rowLabels.forEach((text, r) => {
    if (r % every === 0) label(text, { x: pad.left - 4, y: pad.top + r * cell + cell / 2 + 3, "text-anchor": "end" }, `${spec.testid}-row-label`);
  });
  spec.colLabels.forEach((text, c) => {
    if (c % every === 0) label(text, { x: pad.left + c * cell + cell / 2, y: pad.top + rows * cell + 12, "text-anchor": "middle" }, `${spec.testid}-col-label`);
  });
  label(spec.colName, { x: pad.left + (cols * cell) / 2, y: height - 2, "text-anchor": "middle" }, `${spec.testid}-axis`);
  const rowMid = pad.top + (rows * cell) / 2;
  label(spec.rowName, { x: 10, y: rowMid, "text-anchor": "middle", transform: `rotate(-90 10 ${rowMid})` }, `${spec.testid}-row-axis`);
  const outline = { fill: "none", stroke: "var(--cvz-accent, #e8710a)", "stroke-width": 2, "pointer-events": "none" };
  if (spec.markRow !== undefined && spec.markRow >= 0) {
    root.append(svg("rect", { ...outline, x: pad.left, y: pad.top + spec.markRow * cell, width: cols * cell, height: cell }));
  }
  if (spec.markCol !== undefined && spec.markCol >= 0) {
    root.append(svg("rect", { ...outline, x: pad.left + spec.markCol * cell, y: pad.top, width: cell, height: rows * cell }));
  }
  figure.append(root, legend(spec.testid, range), readout);
  return figure;
}

/**
 * One heatmap's colour scale: the range its colours span.
 * @param {string} testid @param {{lo: number, hi: number}} range
 */
function legend(testid, range) {
  const box = el("div", "cvz-legend");
  const bar = el("span", "cvz-legend-bar");
  bar.style.background = cssGradient(SEQUENTIAL);
  box.dataset.testid = `${testid}-legend`;
  box.dataset.lo = String(range.lo);
  box.dataset.hi = String(range.hi);
  box.append(el("span", "cvz-legend-end", formatFixed(range.lo)), bar, el("span", "cvz-legend-end", formatFixed(range.hi)),
    el("span", "cvz-legend-note", "colours span the values shown"));
  return box;
}

/** What the numbers are, once for the view. */
function explanation() {
  const note = el("p", "cvz-legend-note",
    "Debiased linear CKA on the probe (unbiased HSIC): 1 = the same representation up to rotation and scale, " +
    "≈ 0 = unrelated (it may dip below 0 by chance). Hover a cell for its 95% interval (jackknife over probe images).");
  note.dataset.testid = "cka-explanation";
  return note;
}

/**
 * A figure for one answer: the heatmap once it is there, else why not.
 * @param {import("../store.js").KeyedLoad} load @param {string} testid @param {(data: any) => HTMLElement} build
 */
function panel(load, testid, build) {
  if (load.status === "error") {
    const note = el("p", "cvz-note", `Could not compute CKA: ${load.error}`);
    note.dataset.testid = `${testid}-message`;
    return note;
  }
  if (!load.data) return el("p", "cvz-note", "Computing CKA…");
  return build(load.data);
}

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountCka(root, store) {
  const { card, head, title, sub } = viewCard("cvz-card cvz-cka", "cka-view");
  const controls = el("div", "cvz-compare-controls");
  const runB = labelledSelect("Run B", "cka-run-b", (v) => store.setSimilarity({ runB: v, stepB: -1 }));
  const stepB = labelledSelect("Step B", "cka-step-b", (v) => store.setSimilarity({ stepB: Number(v) }));
  controls.append(runB.element, stepB.element, explanation());
  const figures = el("div", "cvz-cka-figures");
  figures.style.display = "flex";
  figures.style.flexWrap = "wrap";
  figures.style.gap = "24px";
  card.append(head, controls, figures);
  root.append(card);

  /** What was drawn last, so unrelated state changes do not redraw. */
  let drawn = /** @type {any[]} */ ([]);

  store.subscribe((s) => {
    card.hidden = s.phase !== "ready" || s.mode !== "similarity";
    if (card.hidden) {
      drawn = [];
      return;
    }
    const sim = s.similarity;
    const nameB = sim.runB || s.run;
    title.textContent = `Similarity · layer ${s.layer}`;
    sub.textContent = `run ${s.run}: how alike layers and steps represent the probe (debiased linear CKA)`;
    runB.setOptions(
      [{ value: "", text: `same run (${s.run})` }, ...s.runs.filter((r) => r.run !== s.run).map((r) => ({ value: r.run, text: r.run }))],
      sim.runB,
    );
    const stepsB = store.runEntry(nameB)?.layers[0]?.steps ?? [];
    stepB.setOptions(
      [{ value: "-1", text: "slider's step" }, ...stepsB.map((x) => ({ value: String(x), text: String(x) }))],
      String(sim.stepB),
    );
    const loading = [sim.layers, sim.epochs, sim.final].some((l) => l.status === "loading");
    card.dataset.loading = String(loading);
    setExportParts(card, [s.run, s.layer, `step${s.step}`]);
    const now = [sim.layers, sim.epochs, sim.final, s.layer, s.step];
    if (now.every((x, i) => x === drawn[i])) return;
    drawn = now;

    figures.replaceChildren(
      panel(sim.layers, "cka-layers", (d) =>
        heatmap({
          testid: "cka-layers",
          title: `Layer × layer: A = ${d.a.run} at step ${d.a.step} (rows) vs B = ${d.b.run} at step ${d.b.step} (columns), ${d.images} probe images`,
          values: d.cka,
          lo: d.cka_lo,
          hi: d.cka_hi,
          images: d.images,
          rowLabels: d.a.layers,
          colLabels: d.b.layers,
          rowName: "A layer",
          colName: "B layer",
          markRow: d.a.layers.indexOf(s.layer),
          markCol: d.b.layers.indexOf(s.layer),
        }),
      ),
      panel(sim.epochs, "cka-epochs", (d) =>
        heatmap({
          testid: "cka-epochs",
          title: `Layer ${d.layer}, step × step: when did it stop changing? (${d.images} probe images)`,
          values: d.cka,
          lo: d.cka_lo,
          hi: d.cka_hi,
          images: d.images,
          rowLabels: d.steps.map(String),
          colLabels: d.steps.map(String),
          rowName: "step",
          colName: "step",
          markRow: d.steps.indexOf(s.step),
          markCol: d.steps.indexOf(s.step),
        }),
      ),
      panel(sim.final, "cka-final", (d) =>
        heatmap({
          testid: "cka-final",
          title: `Each layer's CKA to the final step (${d.final_step}): which layers settle first (${d.images} probe images)`,
          values: d.layers.flatMap((/** @type {string} */ l) => d.cka[l]),
          lo: d.layers.flatMap((/** @type {string} */ l) => d.cka_lo[l]),
          hi: d.layers.flatMap((/** @type {string} */ l) => d.cka_hi[l]),
          images: d.images,
          rowLabels: d.layers,
          colLabels: d.steps.map(String),
          rowName: "layer",
          colName: "step",
          markRow: d.layers.indexOf(s.layer),
          markCol: d.steps.indexOf(s.step),
        }),
      ),
    );
  });
}
