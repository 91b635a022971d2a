// The Impact view: every filter of the layer at the slider's step in one sortable table, by what
// the model loses without it (exact ablation and Taylor estimate), class selectivity and its
// perturbation responses, with flags for counterfactual-sensitive and class-concentrated filters.
// A row opens the filter's detail.

import { absentMessage, answerFor, examplesNeededText, filterRow, filterValue, recordStepNote, whole } from "../analysis.js";
import { formatCount, formatNumber, formatPercent, formatSigned, mean, sortOrder } from "../numeric.js";
import { IMPACT, counterfactualKey, exactKey, shapeTextureIndexKey, topExampleKey } from "../recordkeys.js";
import { RowLimit, el, filterTableRow, markSelected, sortButton, svg, viewCard } from "./controls.js";
import { csvButton, setExportParts } from "./download.js";
import { shapeTextureSection } from "./shapetexture.js";

/**
 * @typedef {import("../analysis.js").Arrays} Arrays
 * @typedef {import("../recordkeys.js").RecordNames} RecordNames
 * @typedef {{key: string, label: string, title: string, best: "low"|"high"|"abs",
 *   value: (f: number) => ?number, format: (v: ?number) => string}} Metric
 *   best: which end comes first in the natural order (most notable first): the lowest value, the
 *   highest, or the largest magnitude
 */

/** @type {Metric} */
const BY_INDEX = {
  key: "index",
  label: "Filter",
  title: "Filter index",
  best: "low",
  value: (f) => f,
  format: (v) => `#${v}`,
};

/**
 * The columns this layer's answers hold, in table order.
 * @param {?Arrays} impact @param {?Arrays} responses @param {string[]} counterfactuals
 * @param {RecordNames} names
 * @returns {Metric[]}
 */
function metricsOf(impact, responses, counterfactuals, names) {
  /** @type {Metric[]} */
  const metrics = [BY_INDEX];
  /**
   * @param {?Arrays} arrays @param {string} name @param {string} label @param {string} title
   * @param {Metric["best"]} best @param {Metric["format"]} format
   */
  const add = (arrays, name, label, title, best, format) => {
    if (arrays?.[name]) metrics.push({ key: name, label, title, best, value: (f) => filterValue(arrays, name, f), format });
  };
  const two = (/** @type {?number} */ v) => formatNumber(v, 2);
  add(impact, IMPACT.dAccuracy, "Δaccuracy", "Change of probe accuracy without the filter (most lost first)", "low", formatPercent);
  add(impact, IMPACT.dLoss, "Δloss", "Change of mean cross-entropy without the filter, exact ablation", "high", formatSigned);
  add(impact, IMPACT.flips, "Flips", "Probe predictions that change class without the filter", "high", formatCount);
  add(impact, IMPACT.taylorDLoss, "Taylor Δloss", "First-order estimate of Δloss from one backward pass", "high", formatSigned);
  add(impact, IMPACT.classSelectivity, "Class sel.", "Class selectivity index: 0 no class preference, 1 fires for one class only", "high", two);
  add(responses, "osi", "OSI", "Orientation selectivity on gratings: 0 none, 1 one orientation only", "high", two);
  if (responses?.shift) {
    metrics.push({
      key: "shift",
      label: "Shift",
      title: "Cosine of the map on a circularly shifted input with the shifted map, mean over the shifts (least shift-following first)",
      best: "low",
      value: (f) => mean(filterRow(responses, "shift", f)),
      format: two,
    });
  }
  add(responses, "reversal", "Reversal", "Cosine of the map on the time-reversed input with the reversed map", "low", two);
  const sigmas = whole(responses, "noise_sigmas");
  if (responses?.stability && sigmas.length) {
    const mid = sigmas.length >> 1;
    metrics.push({
      key: "stability",
      label: `Stability σ=${formatNumber(sigmas[mid], 2)}`,
      title: `Cosine with the clean map under noise of σ = ${formatNumber(sigmas[mid], 2)} × probe std (least stable first)`,
      best: "low",
      value: (f) => filterRow(responses, "stability", f)[mid] ?? null,
      format: (v) => formatNumber(v, 3),
    });
  }
  add(responses, "fgsm", "FGSM", "Relative activation change under an FGSM attack", "high", (v) => formatNumber(v));
  const st = shapeTextureIndexKey(names);
  if (st) {
    add(responses, st, "Shape–texture", "Shape–texture index: −1 responds only to texture, +1 only to shape (most shape-driven first)", "high", two);
  }
  for (const name of counterfactuals) {
    add(responses, counterfactualKey(names, name), name, `Counterfactual "${name}": signed change of mean |activation| (largest first)`, "abs", formatPercent);
  }
  return metrics;
}

/**
 * Filter indices in the metric's natural order, or its reverse.
 * @param {number} count @param {Metric} metric @param {boolean} reverse
 */
function orderBy(count, metric, reverse) {
  const keys = Array.from({ length: count }, (_, f) => {
    const v = metric.value(f);
    return metric.best === "abs" && v !== null ? Math.abs(v) : v;
  });
  return sortOrder(keys, (metric.best !== "low") !== reverse);
}

/**
 * The flags of filter `f`: each counterfactual it reacts to far more than the layer's others, and
 * a top-k that is one class.
 * @param {?Arrays} impact @param {?Arrays} responses @param {string[]} counterfactuals
 * @param {RecordNames} names @param {number} f
 * @returns {Array<{flag: string, text: string, title: string}>}
 */
function flagsOf(impact, responses, counterfactuals, names, f) {
  const flags = [];
  for (const name of counterfactuals) {
    if (filterValue(responses, counterfactualKey(names, name, "flag"), f)) {
      flags.push({ flag: "counterfactual", text: name, title: `Reacts to "${name}" far more than the layer's other filters` });
    }
  }
  if (filterValue(impact, topExampleKey(names, "flag"), f)) {
    const cls = filterValue(impact, topExampleKey(names, "class"), f);
    flags.push({ flag: "class", text: `class ${cls}`, title: `≥ 90 % of its top activating probe examples are class ${cls}` });
  }
  return flags;
}

/** Columns that only exact ablation gives: empty for filters over the exact-ablation budget. */
const EXACT_ONLY = new Set([IMPACT.dAccuracy, IMPACT.dLoss, IMPACT.flips]);

/**
 * How sure the impact numbers of filter `f` are: its Δaccuracy interval, whether it was ablated
 * exactly, and whether its effect is significant after the layer's BH adjustment.
 * @param {?Arrays} impact @param {RecordNames} names @param {number} f
 */
function certaintyOf(impact, names, f) {
  const ci = filterRow(impact, IMPACT.dAccuracyCi, f);
  const exact = filterValue(impact, exactKey(names), f);
  const significant = filterValue(impact, IMPACT.significant, f);
  return {
    interval: ci.length === 2 && ci[0] !== null && ci[1] !== null ? /** @type {[number, number]} */ (ci) : null,
    estimated: exact === 0,
    insignificant: exact !== 0 && significant === 0,
    pAdjusted: filterValue(impact, IMPACT.pAdjusted, f),
  };
}

/**
 * An error bar: the interval as a line over a zero tick, the value as a dot, on ±`range`.
 * @param {[number, number]} interval @param {?number} value @param {number} range
 */
function errorBar(interval, value, range) {
  const width = 64;
  const x = (/** @type {number} */ v) => ((v / range + 1) / 2) * (width - 4) + 2;
  const bar = svg("svg", { class: "cvz-errorbar", width, height: 10 });
  bar.dataset.testid = "impact-errorbar";
  bar.append(
    svg("line", { x1: x(0), x2: x(0), y1: 1, y2: 9, class: "cvz-errorbar-zero" }),
    svg("line", { x1: x(interval[0]), x2: x(interval[1]), y1: 5, y2: 5, class: "cvz-errorbar-ci" }),
  );
  if (value !== null) bar.append(svg("circle", { cx: x(value), cy: 5, r: 2, class: "cvz-errorbar-value" }));
  return bar;
}

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountImpact(root, store) {
  const { card, head, title, sub } = viewCard("cvz-card cvz-impact", "impact-view");
  const messages = el("div", "cvz-impact-messages");
  const summary = el("dl", "cvz-facts cvz-impact-summary");
  summary.dataset.testid = "impact-summary";
  const needed = el("p", "cvz-note cvz-examples-needed");
  needed.dataset.testid = "examples-needed";
  const shapeTexture = shapeTextureSection();
  const note = el(
    "p",
    "cvz-note",
    "Δ = without the filter − with it, on the probe. Click a column to sort (again to reverse), a row for the filter's detail.",
  );
  const table = el("table", "cvz-table");
  table.dataset.testid = "impact-table";
  const thead = el("thead");
  const tbody = el("tbody");
  table.append(thead, tbody);
  const wrap = el("div", "cvz-table-wrap cvz-impact-wrap");
  wrap.append(table);
  /** Every row in the current order, for the CSV: the table itself may show only the first ones. */
  let allRows = () => /** @type {Element[]} */ ([]);
  const noteRow = el("div", "cvz-table-tools");
  noteRow.append(note, csvButton(/** @type {HTMLTableElement} */ (table), "impact", () => [thead.firstElementChild, ...allRows()]));
  const limit = new RowLimit("impact-show-all", () => {
    shown = [];
    render(store.state);
  });
  card.append(head, messages, summary, needed, noteRow, wrap, limit.button, shapeTexture.element);
  root.append(card);

  /** What the table was drawn from, so unrelated state changes do not redraw it. */
  let shown = /** @type {unknown[]} */ ([]);

  /** @param {import("../store.js").State} s */
  const render = (s) => {
    card.hidden = s.phase !== "ready" || s.mode !== "impact";
    if (card.hidden) {
      shown = [];
      return;
    }
    const { perturbation, impact } = s.analysis;
    const now = [s.run, s.layer, s.step, impact.status, impact.data, perturbation.status, perturbation.data, s.impactSort, s.shapeTexture];
    if (now.every((v, i) => v === shown[i])) {
      markSelected(tbody, s.filter); // a click on a row: the table stays
      return;
    }
    shown = now;

    const count = store.layerEntry()?.info.filters ?? 0;
    title.textContent = `Impact · layer ${s.layer}`;
    sub.textContent = `run ${s.run} · step ${s.step}: what the model loses without each filter, and how each responds to perturbations`;
    card.dataset.loading = String(impact.status === "loading" || perturbation.status === "loading");
    card.dataset.step = String(s.step);
    setExportParts(card, [s.run, s.layer, `step${s.step}`]);

    // While the slider's step loads, the previous step's table stays, dimmed.
    const here = { run: s.run, layer: s.layer };
    const impactData = answerFor(impact, here);
    const responseData = answerFor(perturbation, here);
    messages.replaceChildren(
      ...[/** @type {const} */ (["impact", impact, impactData]), /** @type {const} */ (["perturbation", perturbation, responseData])]
        .map(([kind, load, answer]) => absentMessage(kind, load) || recordStepNote(kind, answer))
        .filter((text) => text)
        .map((text) => {
          const p = el("p", "cvz-basis", text);
          p.dataset.testid = "impact-message";
          return p;
        }),
    );
    // The distribution over the run's layers, for its step: shown when the run logged it.
    const st = s.shapeTexture;
    shapeTexture.update(st.status === "ready" && st.data.run === s.run ? st.data : null, s.layer);
    if (!impactData && !responseData) {
      const loading = impact.status === "loading" || perturbation.status === "loading";
      summary.hidden = noteRow.hidden = wrap.hidden = needed.hidden = limit.button.hidden = true;
      if (loading && !messages.childElementCount) messages.append(el("p", "cvz-note", `Loading the impact of layer ${s.layer}…`));
      return;
    }
    summary.hidden = noteRow.hidden = wrap.hidden = false;
    /** @type {?Arrays} */
    const ia = impactData?.arrays ?? null;
    /** @type {?Arrays} */
    const ra = responseData?.arrays ?? null;
    const counterfactuals = responseData?.counterfactuals ?? [];
    const names = s.names;
    const metrics = metricsOf(ia, ra, counterfactuals, names);
    const metric = metrics.find((m) => m.key === s.impactSort.metric) ?? metrics[Math.min(1, metrics.length - 1)];
    const reverse = metric.key === s.impactSort.metric && s.impactSort.reverse;
    card.dataset.sort = metric.key;
    card.dataset.reverse = String(reverse);

    fillSummary(summary, ia, ra, counterfactuals, names, count);
    needed.textContent = examplesNeededText(impactData?.examples_needed);
    needed.hidden = needed.textContent === "";
    // Filter and Flags first, both pinned: a narrow table scrolls sideways under them.
    const headRow = el("tr");
    for (const m of metrics) {
      const th = el("th", m.key === "index" ? "cvz-pinned" : "cvz-num");
      const active = m === metric;
      const button = sortButton(m.label, m.title, "impact-sort", () => store.setImpactSort(m.key, active ? !reverse : false));
      button.dataset.metric = m.key;
      button.setAttribute("aria-pressed", String(active));
      if (active && reverse) button.classList.add("cvz-sort-reverse");
      th.append(button);
      headRow.append(th);
      if (m.key === "index") headRow.append(el("th", "cvz-pinned cvz-flags", "Flags"));
    }
    thead.replaceChildren(headRow);

    const ciRange = Math.max(1e-9, ...whole(ia, IMPACT.dAccuracyCi).map((v) => Math.abs(v ?? 0)));
    /** @param {number} f */
    const rowOf = (f) => {
      const row = filterTableRow("impact-row", f, s.filter, (g) => store.selectFilter(g));
      const value = metric.value(f);
      row.dataset.value = value === null ? "" : String(value);
      const flagCell = el("td", "cvz-pinned cvz-flags");
      for (const flag of flagsOf(ia, ra, counterfactuals, names, f)) {
        const badge = el("span", `cvz-badge cvz-badge-${flag.flag}`, flag.text);
        badge.dataset.testid = "impact-flag";
        badge.dataset.flag = flag.flag;
        badge.title = flag.title;
        flagCell.append(badge);
      }
      const certainty = certaintyOf(ia, names, f);
      if (certainty.estimated) row.classList.add("cvz-estimated");
      if (certainty.insignificant) row.classList.add("cvz-insignificant");
      for (const m of metrics) {
        const pinned = m.key === "index";
        const cell = el("td", `${pinned ? "cvz-pinned cvz-filter-cell" : "cvz-num"}${m === metric ? " cvz-sorted" : ""}`, m.format(m.value(f)));
        if (m.key === IMPACT.dAccuracy && certainty.interval) {
          cell.append(errorBar(certainty.interval, m.value(f), ciRange));
          cell.title = `95% interval ${formatPercent(certainty.interval[0])} … ${formatPercent(certainty.interval[1])}` +
            (certainty.pAdjusted === null ? "" : `, McNemar p = ${formatNumber(certainty.pAdjusted, 2)} (BH-adjusted)`);
        }
        if (EXACT_ONLY.has(m.key) && certainty.estimated) cell.title = "not ablated exactly at this step (over the exact-ablation budget): see Taylor Δloss";
        row.append(cell);
        if (pinned) row.append(flagCell);
      }
      return row;
    };
    const order = orderBy(count, metric, reverse);
    tbody.replaceChildren(...limit.take([s.run, s.layer].join("\0"), order).map(rowOf));
    allRows = () => order.map(rowOf);
  };
  store.subscribe(render);
}

/**
 * The layer at a glance: probe accuracy, how well Taylor ranks filters, how many are flagged.
 * @param {HTMLElement} box @param {?Arrays} impact @param {?Arrays} responses
 * @param {string[]} counterfactuals @param {RecordNames} names @param {number} count
 */
function fillSummary(box, impact, responses, counterfactuals, names, count) {
  /** @type {Array<[string, string, string, string]>} label, value, tooltip, testid */
  const rows = [];
  if (impact) {
    const [accuracy] = whole(impact, IMPACT.accuracy);
    const [rho] = whole(impact, IMPACT.taylorSpearman);
    const needed = whole(impact, IMPACT.dAccuracy).filter((v) => v !== null && v < 0).length;
    const concentrated = whole(impact, topExampleKey(names, "flag")).filter((v) => v).length;
    rows.push(
      ["probe accuracy", formatPercent(accuracy, { signed: false }), "Accuracy of the intact model on the labelled probe", "probe-accuracy"],
      [
        "Taylor vs exact",
        `ρ = ${formatNumber(rho, 2)}`,
        "Spearman rank correlation of the Taylor estimate with the exact ablation Δloss over this layer's filters: near 1, the one-pass estimate ranks filters as exact ablation does",
        "taylor-spearman",
      ],
      ["needed (Δaccuracy < 0)", `${needed} of ${count}`, "Filters without which the probe accuracy drops", "needed"],
      ["class-concentrated", `${concentrated} of ${count}`, "Filters whose top activating probe examples are ≥ 90 % one class", "concentrated"],
    );
    const exact = whole(impact, exactKey(names));
    if (exact.length) {
      const ablated = exact.filter((v) => v).length;
      rows.push(["ablated exactly", `${ablated} of ${count}`, "Filters ablated exactly at this step; the rest (over the exact-ablation budget) carry only the Taylor estimate", "exact-count"]);
    }
    const significant = whole(impact, IMPACT.significant);
    if (significant.length) {
      rows.push([
        "significant (α = 0.05, BH)",
        `${significant.filter((v) => v).length} of ${count}`,
        "Filters whose Δaccuracy is significant by McNemar's exact test on the probe, Benjamini–Hochberg-adjusted within the layer; the others are greyed out",
        "significant-count",
      ]);
    }
    const [detectable] = whole(impact, IMPACT.detectableDAccuracy);
    if (detectable !== undefined) {
      rows.push([
        "detectable Δaccuracy",
        detectable === null ? "none: probe too small" : `≥ ${formatPercent(detectable, { signed: false })}`,
        "The smallest accuracy change this probe can detect (80% power, α = 0.05, all changes one way): smaller effects cannot be told from noise — a larger probe can",
        "detectable",
      ]);
    }
  }
  for (const name of counterfactuals) {
    const flagged = whole(responses, counterfactualKey(names, name, "flag")).filter((v) => v).length;
    rows.push([`flagged by "${name}"`, `${flagged} of ${count}`, `Filters that react to "${name}" far more than the layer's others`, "counterfactual-flagged"]);
  }
  box.replaceChildren();
  for (const [label, value, tip, testid] of rows) {
    const dt = el("dt", "", label);
    dt.title = tip;
    const dd = el("dd", "", value);
    dd.dataset.testid = testid;
    box.append(dt, dd);
  }
  box.hidden = rows.length === 0;
}

