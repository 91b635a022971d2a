// One filter's impact, in its detail: its value in every column of the impact record as declared
// (what the model loses without it, what it fires on), Δrecall per class, and its top activating
// probe examples with its activation laid over them.

import { classesInWords, filterRow, filterValue } from "../analysis.js";
import { filterFacts } from "../columns.js";
import { exactKey, topExampleKey } from "../recordkeys.js";
import { scaleOf } from "../raster.js";
import { along } from "../wire.js";
import { barList } from "./chart.js";
import { formatPercent } from "../numeric.js";
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
 * What the model loses without the filter: its value in every column of the impact record (from
 * the layer's table), as declared, and its per-class changes.
 * @param {any} answer the /impact payload @param {?import("../columns.js").Table} table
 * @param {number} f @param {?PerClass} perClass @param {import("../recordkeys.js").RecordNames} names
 * @returns {HTMLElement}
 */
function impactFacts(answer, table, f, perClass, names) {
  const box = section("Impact on the model", "detail-impact");
  box.append(
    el(
      "p",
      "cvz-note",
      "The filter's output zeroed on the labelled probe. Δ = without − with: a filter the model needs has Δaccuracy < 0 and Δloss > 0. Hover a name for what it means.",
    ),
  );
  const columns = table ? table.columns.filter((c) => c.kind === answer.kind) : [];
  const facts = table ? filterFacts(table, columns, f) : [];
  if (facts.length) {
    box.append(factList(facts.map((x) => [x.label, x.text, `column-${x.name}`, x.title])));
  } else {
    box.append(el("p", "cvz-note", "Loading the layer's table…"));
  }
  if (perClass) box.append(...recallViews(perClass));
  else if (filterValue(answer.arrays, exactKey(names), f) === 0) {
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
 * @param {?import("../columns.js").Table} table the layer's table at the step (its impact columns)
 * @returns {HTMLElement[]}
 */
export function impactViews(data, filter, examples, perClass, names, table) {
  const arrays = /** @type {Arrays} */ (data.arrays);
  const top = topExamples(arrays, filter, examples, names);
  const facts = impactFacts(data, table, filter, perClass, names);
  return top ? [facts, top] : [facts];
}
