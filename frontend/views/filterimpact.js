// One filter's impact, in its detail: what the model loses without it (Δaccuracy, Δconfidence,
// Δloss exact and by Taylor, flips, Δrecall per class), what it fires on (class selectivity,
// errors vs correct) and its top activating probe examples with its activation laid over them.

import { classesInWords, filterRow, filterValue, layerMedian, whole } from "../analysis.js";
import { IMPACT, exactKey, topExampleKey } from "../recordkeys.js";
import { scaleOf } from "../raster.js";
import { along } from "../wire.js";
import { barList } from "./chart.js";
import { formatCount, formatNumber, formatPercent, formatSigned } from "../numeric.js";
import { el, factList, section } from "./controls.js";
import { exampleView, signalLegend } from "./examples.js";

/**
 * @typedef {import("../analysis.js").Arrays} Arrays
 * @typedef {import("../wire.js").NdArray} NdArray
 * @typedef {{probe: ?NdArray, maps: ?NdArray, mapImages: number[], alpha: number}} Examples
 *   probe: every probe input (N, C, ...spatial); maps: the filter's activation on the probe
 *   images kept (images, ...spatial), image i being probe example mapImages[i]
 */

/**
 * The filter's Δaccuracy interval and verdict in words.
 * @param {Arrays} arrays @param {number} f
 */
function intervalText(arrays, f) {
  const [lo, hi] = filterRow(arrays, IMPACT.dAccuracyCi, f);
  if (lo === undefined || lo === null || hi === null) return "not ablated exactly: no interval";
  const p = filterValue(arrays, "p_adjusted", f);
  const verdict = filterValue(arrays, "significant", f) ? "significant" : "not significant";
  return `Δaccuracy in [${formatPercent(lo)}, ${formatPercent(hi)}], ${verdict} (p = ${formatNumber(p, 2)}, BH)`;
}

/**
 * 1-based rank of `filter` in the layer by `name`, largest first; null when its value is missing.
 * @param {Arrays} arrays @param {string} name @param {number} filter
 */
function rankOf(arrays, name, filter) {
  const mine = filterValue(arrays, name, filter);
  if (mine === null) return null;
  return 1 + whole(arrays, name).filter((v) => v !== null && v > mine).length;
}

/**
 * @typedef {{classes: number[], class_support: number[], d_recall: Array<?number>, d_precision: Array<?number>,
 *   d_recall_ci: Array<?number>, detectable_d_recall: Array<?number>, alpha: number}} PerClass
 *   one filter's per-class changes (the /filter answer's per_class): classes present in the probe,
 *   their support, Δrecall with its interval (C × 2, flat), and the smallest |Δrecall| each
 *   class's support can reveal (null: none)
 */

/**
 * Δrecall per class, with intervals, and what the probe is too small to tell.
 * @param {PerClass} perClass @returns {HTMLElement[]}
 */
function recallViews(perClass) {
  const level = `${Math.round((1 - perClass.alpha) * 100)}%`;
  const blind = perClass.classes.filter((_, k) => perClass.detectable_d_recall[k] === null);
  const out = [
    el("h5", "cvz-response-title", "Δrecall per class"),
    barList({
      items: perClass.d_recall.map((v, k) => {
        const [lo, hi] = [perClass.d_recall_ci[2 * k], perClass.d_recall_ci[2 * k + 1]];
        const detectable = perClass.detectable_d_recall[k];
        const n = perClass.class_support[k];
        return {
          label: `class ${perClass.classes[k]} (${n})`,
          value: v,
          text: `${formatPercent(v)} [${formatPercent(lo)}, ${formatPercent(hi)}]`,
          title:
            `Δprecision ${formatPercent(perClass.d_precision[k])}; ${level} interval of Δrecall ${formatPercent(lo)} … ${formatPercent(hi)}; ` +
            (detectable === null
              ? `${n} probe examples of class ${perClass.classes[k]}: too few for any change to be significant`
              : `with ${n} probe examples, only |Δrecall| ≥ ${formatPercent(detectable, { signed: false })} can be detected`),
        };
      }),
      signed: true,
      testid: "recall-bars",
    }),
  ];
  if (blind.length) {
    const note = el(
      "p",
      "cvz-note",
      `The probe is too small to tell for ${blind.length === perClass.classes.length ? "every class" : `class${blind.length > 1 ? "es" : ""} ${blind.join(", ")}`}: ` +
        "a per-class change needs at least 6 examples of the class all changing one way to be significant. Add examples of these classes to the probe.",
    );
    note.dataset.testid = "probe-too-small";
    out.push(note);
  }
  return out;
}

/**
 * @param {Arrays} arrays @param {number} f @param {?PerClass} perClass
 * @param {import("../recordkeys.js").RecordNames} names @returns {HTMLElement}
 */
function impactFacts(arrays, f, perClass, names) {
  const box = section("Impact on the model", "detail-impact");
  box.append(
    el(
      "p",
      "cvz-note",
      "The filter's output zeroed on the labelled probe. Δ = without − with: a filter the model needs has Δaccuracy < 0 and Δloss > 0.",
    ),
  );
  const examples = whole(arrays, IMPACT.cleanPred).length;
  const filters = arrays[IMPACT.dLoss]?.shape[0] ?? 0;
  const rank = rankOf(arrays, IMPACT.dLoss, f);
  const [accuracy] = whole(arrays, IMPACT.accuracy);
  box.append(
    factList([
      ["Δaccuracy", `${formatPercent(filterValue(arrays, IMPACT.dAccuracy, f))} of ${formatPercent(accuracy, { signed: false })}`, "impact-d_accuracy"],
      ["how sure", intervalText(arrays, f), "impact-d_accuracy_ci"],
      ["flipped predictions", `${formatCount(filterValue(arrays, IMPACT.flips, f))} of ${examples}`, "impact-flips"],
      ["Δconfidence (true class)", formatSigned(filterValue(arrays, IMPACT.dConfidence, f)), "impact-d_confidence"],
      ["Δloss", formatSigned(filterValue(arrays, IMPACT.dLoss, f)), "impact-d_loss"],
      ["Δloss by Taylor", formatSigned(filterValue(arrays, IMPACT.taylorDLoss, f)), "impact-taylor_d_loss"],
      ["rank by Δloss", rank === null ? "—" : `${rank} of ${filters}`, "impact-rank"],
      [
        "class selectivity",
        `${formatNumber(filterValue(arrays, IMPACT.classSelectivity, f), 2)} (median ${formatNumber(layerMedian(arrays, IMPACT.classSelectivity), 2)})`,
        "impact-class_selectivity",
      ],
      [
        "fires on errors / correct",
        `${formatNumber(filterValue(arrays, IMPACT.actOnErrors, f))} / ${formatNumber(filterValue(arrays, IMPACT.actOnCorrect, f))}`,
        "impact-errors_vs_correct",
      ],
    ]),
  );

  if (perClass) box.append(...recallViews(perClass));
  else if (filterValue(arrays, exactKey(names), f) === 0) {
    box.append(el("p", "cvz-note", "Not ablated exactly at this step (over the exact-ablation budget): only the Taylor estimate is known."));
  }
  return box;
}

/**
 * @param {Arrays} arrays @param {number} f @param {Examples} ex
 * @param {import("../recordkeys.js").RecordNames} names @returns {?HTMLElement}
 */
function topExamples(arrays, f, ex, names) {
  const indices = filterRow(arrays, topExampleKey(names, "index"), f);
  if (!indices.length) return null;
  const box = section("Top activating probe examples", "detail-top-examples");
  const labels = filterRow(arrays, topExampleKey(names, "label"), f);
  const note = el("p", "cvz-note", `The ${indices.length} probe examples where its peak activation is highest: ${classesInWords(labels)}.`);
  note.dataset.testid = "top-examples-classes";
  if (filterValue(arrays, topExampleKey(names, "flag"), f)) {
    const badge = el("span", "cvz-badge", "class-concentrated");
    badge.dataset.testid = "badge";
    badge.title = "≥ 90 % of its top examples are one class: it may detect that class, or a shortcut in it";
    note.prepend(badge, " ");
  }
  box.append(note);
  if (ex.probe?.shape.length === 3) box.append(signalLegend({ activation: ex.maps !== null, input: true }));
  const scale = ex.maps ? scaleOf(ex.maps.values, "sequential") : { lo: 0, hi: 1 };
  const wall = el("div", "cvz-examples");
  indices.forEach((id, rank) => {
    const figure = el("figure", "cvz-map");
    figure.dataset.testid = "top-example";
    figure.dataset.index = String(id);
    const i = id === null ? -1 : ex.mapImages.indexOf(id);
    const map = ex.maps && i >= 0 ? along(ex.maps, i) : null;
    figure.dataset.overlay = String(map !== null);
    if (ex.probe && id !== null && id < ex.probe.shape[0]) {
      figure.append(exampleView(along(ex.probe, id), map, scale, ex.alpha, 56));
    }
    figure.title = `rank ${rank + 1}: probe image #${id}, class ${labels[rank]}`;
    figure.append(el("figcaption", "cvz-map-label", `#${id}\nclass ${labels[rank]}`));
    wall.append(figure);
  });
  box.append(wall);
  if (ex.maps) box.append(el("p", "cvz-note", `Activation laid over the examples whose maps were kept (probe images ${ex.mapImages.join(", ")}).`));
  return box;
}

/**
 * The filter's impact and top examples at the answer's step.
 * @param {any} data the /impact payload @param {number} filter @param {Examples} examples
 * @param {?PerClass} perClass the filter's per-class changes, from its /filter answer
 * @param {import("../recordkeys.js").RecordNames} names
 * @returns {HTMLElement[]}
 */
export function impactViews(data, filter, examples, perClass, names) {
  const arrays = /** @type {Arrays} */ (data.arrays);
  const top = topExamples(arrays, filter, examples, names);
  const facts = impactFacts(arrays, filter, perClass, names);
  return top ? [facts, top] : [facts];
}
