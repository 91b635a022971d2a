// One filter's perturbation responses, in its detail: orientation tuning and probe rotation as
// polar plots (2-D), shift and reversal (1-D), noise stability over σ, FGSM/PGD change and each
// counterfactual's change with its flag. The layer's median is drawn beside each for scale.

import { filterRow, filterValue, layerMedian, whole } from "../analysis.js";
import { counterfactualKey, loggedGroups, perturbationKeys } from "../recordkeys.js";
import { formatNumber, formatP, formatPercent, median } from "../numeric.js";
import { el, factList } from "./controls.js";
import { pngButton } from "./download.js";
import { barList, lineChart, polarChart } from "./chart.js";

/**
 * @typedef {import("../analysis.js").Arrays} Arrays
 * @typedef {import("../recordkeys.js").PerturbationKeys} PerturbationKeys
 */

/**
 * One response's box. Bars get a PNG button here; charts carry their own.
 * @param {string} title @param {string} testid @param {string} [note] @param {boolean} [bars]
 */
function block(title, testid, note, bars = false) {
  const box = el("div", "cvz-response");
  box.dataset.testid = testid;
  const heading = el("h5", "cvz-response-title", title);
  if (bars) heading.append(pngButton(() => box, title));
  box.append(heading);
  if (note) box.append(el("p", "cvz-note", note));
  return box;
}

/**
 * " [lo, hi]" of filter `f`'s 95% interval in the (F, 2) array `name`, each end by `format`; empty
 * when the record has none (logs from before intervals).
 * @param {Arrays} arrays @param {string|undefined} name @param {number} f
 * @param {(v: number) => string} format @returns {string}
 */
function bracket(arrays, name, f, format) {
  const [lo, hi] = name ? filterRow(arrays, name, f) : [];
  return lo !== undefined && lo !== null && hi !== undefined && hi !== null ? ` [${format(lo)}, ${format(hi)}]` : "";
}

/**
 * The layer's median response at each column (angle, σ) of a per-filter array (F, X).
 * @param {Arrays} arrays @param {string} name @returns {Array<?number>}
 */
function medianRow(arrays, name) {
  const a = arrays[name];
  if (!a || a.shape.length !== 2) return [];
  const [rows, width] = a.shape;
  return Array.from({ length: width }, (_, j) => median(Array.from({ length: rows }, (_, i) => a.values[i * width + j])));
}

/** @param {Arrays} arrays @param {number} f @param {PerturbationKeys} k @returns {HTMLElement[]} */
function orientation(arrays, f, k) {
  const angles = /** @type {number[]} */ (whole(arrays, k.angles));
  const out = [];
  const tuning = filterRow(arrays, k.tuning, f);
  if (tuning.length) {
    const box = block(
      "Orientation tuning",
      "tuning-polar",
      "Energy on oriented gratings; a lobe points along the stripes the filter prefers (0° = horizontal stripes).",
    );
    const osi = filterValue(arrays, k.osi, f);
    const preferred = filterValue(arrays, k.preferred, f);
    const freq = filterValue(arrays, k.frequency, f);
    const polars = el("div", "cvz-polars");
    polars.append(
      polarChart({
        title: `OSI ${formatNumber(osi, 2)} · prefers ${preferred === null ? "—" : Math.round(preferred)}°`,
        angles,
        series: [{ label: "grating energy", values: tuning }],
        axial: true,
        marker: preferred,
        testid: "polar-chart",
      }),
    );
    const rotation = filterRow(arrays, k.rotation, f);
    if (rotation.length) {
      polars.append(
        polarChart({
          title: "Rotated probe (energy vs unrotated)",
          angles,
          series: [{ label: "rotated probe", values: rotation, className: "cvz-series-1" }],
          axial: false,
          ring: { value: 1, label: "unrotated = 1" },
          testid: "rotation-polar",
        }),
      );
    }
    box.append(polars);
    /** @type {Array<[string, string]>} */
    const facts = [
      ["orientation selectivity", `${formatNumber(osi, 2)} (layer median ${formatNumber(layerMedian(arrays, k.osi), 2)})`],
      ["grating frequency", freq === null ? "—" : `1/${Math.round(1 / freq)} cycles per pixel`],
    ];
    box.append(factList(facts));
    out.push(box);
  }
  return out;
}

/** @param {Arrays} arrays @param {number} f @param {PerturbationKeys} k @returns {HTMLElement[]} */
function symmetry(arrays, f, k) {
  const shift = filterRow(arrays, k.shift, f);
  const reversal = filterValue(arrays, k.reversal, f);
  if (!shift.length && reversal === null) return [];
  const box = block(
    "Shift and reversal",
    "symmetry-bars",
    "Cosine of the map on the changed input with the changed map: 1 = follows the change exactly.",
    true,
  );
  const fractions = whole(arrays, k.fractions);
  const items = shift.map((v, i) => ({ label: `shift ${formatNumber(fractions[i], 2)} L`, value: v }));
  if (reversal !== null) items.push({ label: "time reversal", value: reversal });
  box.append(barList({ items, signed: true, max: 1 }));
  return [box];
}

/** @param {Arrays} arrays @param {number} f @param {PerturbationKeys} k @returns {HTMLElement[]} */
function noise(arrays, f, k) {
  const stability = filterRow(arrays, k.stability, f);
  if (!stability.length) return [];
  const box = block("Noise stability", "noise-chart");
  box.append(
    lineChart({
      title: "Cosine with the clean map under Gaussian noise of σ × probe std (1 = stable)",
      // Logged as float32: 0.1 arrives as 0.100000001…
      x: whole(arrays, k.sigmas).map((v) => Number(Number(v).toPrecision(3))),
      series: [
        { label: "this filter", values: stability },
        { label: "layer median", values: medianRow(arrays, k.stability), className: "cvz-series-7" },
      ],
      xLabel: "σ (× probe std)",
      yLabel: "cosine",
      testid: "response-chart",
    }),
  );
  const mean = stability.reduce((s, v) => s + Number(v), 0) / stability.length;
  const range = bracket(arrays, k.stabilityCi, f, (v) => formatNumber(v));
  if (range) {
    const line = el("p", "cvz-note", `Mean over the levels ${formatNumber(mean)}${range}: 95% interval over the probe's images.`);
    line.dataset.testid = "stability-interval";
    box.append(line);
  }
  return [box];
}

/** @param {Arrays} arrays @param {number} f @param {PerturbationKeys} k @returns {HTMLElement[]} */
function adversarial(arrays, f, k) {
  const fgsm = filterValue(arrays, k.fgsm, f);
  const pgd = filterValue(arrays, k.pgd, f);
  if (fgsm === null && pgd === null) return [];
  const [eps] = whole(arrays, k.epsilon);
  const box = block(
    `Adversarial change (ε = ${formatNumber(eps, 2)} × probe std)`,
    "adversarial-bars",
    "Relative activation change ‖a(x′) − a(x)‖ / ‖a(x)‖ under attacks on the model's loss; bracketed: its 95% interval over the probe's images.",
    true,
  );
  const number = (/** @type {number} */ v) => formatNumber(v);
  const items = [
    { label: "FGSM", value: fgsm, text: `${formatNumber(fgsm)}${bracket(arrays, k.fgsmCi, f, number)}`, mark: layerMedian(arrays, k.fgsm) },
    { label: "PGD", value: pgd, text: `${formatNumber(pgd)}${bracket(arrays, k.pgdCi, f, number)}`, mark: layerMedian(arrays, k.pgd) },
  ];
  box.append(barList({ items }), el("p", "cvz-bars-key", "│ layer median"));
  return [box];
}

/**
 * @param {Arrays} arrays @param {string[]} names the counterfactuals
 * @param {import("../recordkeys.js").RecordNames} recordNames @param {number} f @returns {HTMLElement[]}
 */
function counterfactualList(arrays, names, recordNames, f) {
  if (!names.length) return [];
  const box = block(
    "Counterfactuals",
    "counterfactuals",
    "Signed change of mean |activation| when your edit is applied to the probe, [95% interval over the probe's images] (│ layer median); " +
      "flagged when the change is real (paired t test over the images, BH q ≤ 0.05 within the layer), at least 5% and far beyond the layer's others (robust z > 3.5).",
    true,
  );
  const items = names.map((name) => {
    const key = counterfactualKey(recordNames, name);
    const z = filterValue(arrays, counterfactualKey(recordNames, name, "z"), f);
    const cosine = filterValue(arrays, counterfactualKey(recordNames, name, "cosine"), f);
    const p = filterValue(arrays, counterfactualKey(recordNames, name, "p"), f);
    const q = filterValue(arrays, counterfactualKey(recordNames, name, "q"), f);
    const tested = q !== null ? ` · q ${formatP(q)}` : "";
    const flagged = filterValue(arrays, counterfactualKey(recordNames, name, "flag"), f);
    return {
      label: name,
      value: filterValue(arrays, key, f),
      text: `${formatPercent(filterValue(arrays, key, f))}${bracket(arrays, counterfactualKey(recordNames, name, "ci"), f, (v) => formatPercent(v))}${tested}`,
      mark: layerMedian(arrays, key),
      title:
        (q !== null ? `paired t test over the probe's images: p ${formatP(p)}, q ${formatP(q)} (Benjamini–Hochberg within the layer) · ` : "") +
        `robust z ${formatNumber(z, 2)} within the layer · map cosine ${formatNumber(cosine, 3)}`,
      badge: flagged ? "flagged" : undefined,
    };
  });
  box.append(barList({ items, signed: true, itemTestid: "counterfactual-row" }));
  return [box];
}

/**
 * The filter's perturbation responses at the answer's step.
 * @param {any} data the /perturbation payload @param {number} filter
 * @param {import("../recordkeys.js").RecordNames} names
 * @returns {HTMLElement[]}
 */
export function responseViews(data, filter, names) {
  const arrays = /** @type {Arrays} */ (data.arrays);
  const k = perturbationKeys(names);
  // Which responses the record holds, as the payload's groups say.
  const groups = loggedGroups(data);
  return [
    ...(groups.orientation ? orientation(arrays, filter, k) : []),
    ...(groups.shift || groups.reversal ? symmetry(arrays, filter, k) : []),
    ...(groups.noise ? noise(arrays, filter, k) : []),
    ...(groups.adversarial ? adversarial(arrays, filter, k) : []),
    ...counterfactualList(arrays, data.counterfactuals ?? [], names, filter),
  ];
}
