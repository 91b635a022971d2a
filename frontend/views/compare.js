// Side by side: one layer at epoch A vs epoch B of a run, or in run A vs run B. Both grids put
// the same filters (or, across runs, matched filters) in the same cell; a table ranks the
// filters by drift, norm change or activation change. Run vs run pairs filters once, at a
// reference step, and leads with how alike the pairs respond against chance.

import { DIVERGING } from "../colormap.js";
import { scaleOf } from "../raster.js";
import { decodeWire } from "../wire.js";
import { formatFixed, formatNumber, formatPercent, mean, median, sortOrder } from "../numeric.js";
import { axisTicks } from "../ticks.js";
import { RowLimit, el, filterTableRow, labelledSelect, markSelected, section, segmented, sortButton, svg, viewCard } from "./controls.js";
import { csvButton, pngButton, setExportParts } from "./download.js";
import { FilterGrid } from "./grid.js";
import { drawLegend } from "./layer.js";
import { visualizationPairs } from "./featurevis.js";
import { hasFeatureVis } from "../recordkeys.js";

/** @typedef {"cosine_distance"|"norm_change"|"act_mean_change"} Metric */

/** What each basis means, in words. */
const BASIS = {
  kernels: "Compared on full kernels: both steps kept every input channel of every filter.",
  tiles:
    "Compared on the grid tiles (input channels averaged): full kernels were not kept at both steps, so drift is approximate.",
  logged: "Drift as logged during training: the callback measured these consecutive steps exactly, on the full weights.",
};

/** @type {Record<Metric, string>} */
const METRIC_NAMES = {
  cosine_distance: "Drift (cosine distance)",
  norm_change: "Norm change",
  act_mean_change: "Activation change",
};

/**
 * Most changed first: drift descending; norm and activation change by magnitude.
 * @param {any} data the /compare payload @param {Metric} metric @returns {number[]}
 */
function rankBy(data, metric) {
  const values = /** @type {?Array<?number>} */ (data.metrics[metric]);
  if (!values) return data.order;
  return sortOrder(metric === "cosine_distance" ? values : values.map((v) => (v === null ? null : Math.abs(v))), true);
}

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountCompare(root, store) {
  const { card, head, title, sub } = viewCard("cvz-card cvz-compare", "compare-view");

  const controls = el("div", "cvz-compare-controls");
  // The step slider above is the other step (B in epoch vs epoch, A in run vs run): one control each.
  const stepA = labelledSelect("Step A", "compare-step-a", (v) => store.setCompare({ stepA: Number(v) }));
  const stepB = labelledSelect("Step B", "compare-step-b", (v) => store.setCompare({ stepB: Number(v) }));
  const runB = labelledSelect("Run B", "compare-run-b", (v) => store.setCompare({ runB: v }));
  const align = segmented(
    "Pair filters",
    "align-picker",
    [
      { value: "match", text: "By similarity" },
      { value: "index", text: "By index" },
      { value: "aligned", text: "Aligned inputs" },
    ],
    (v) => store.setCompare({ align: /** @type {"index"|"match"|"aligned"} */ (v) }),
  );
  const pairStep = labelledSelect("Pair at step", "compare-pair-step", (v) => store.setCompare({ pairStep: Number(v) }));
  pairStep.select.title = "The step whose response profiles pair the filters; the pairing is kept as the slider moves";
  const legend = el("div", "cvz-legend");
  controls.append(stepA.element, runB.element, stepB.element, align.element, pairStep.element, legend);

  const headline = el("div", "cvz-compare-headline");
  headline.dataset.testid = "compare-headline";
  const basis = el("p", "cvz-basis");
  basis.dataset.testid = "compare-basis";
  const message = el("p", "cvz-note");
  message.dataset.testid = "compare-message";

  /** @type {any} */
  let data = null;
  /** @type {Metric} */
  let metric = "cosine_distance";
  /** @param {number} f @returns {Array<[string, string]>} */
  const describe = (f) => [
    ["drift (cosine)", formatNumber(data?.metrics.cosine_distance[f])],
    ["norm change", formatPercent(data?.metrics.norm_change[f])],
    ["activation change", formatNumber(data?.metrics.act_mean_change?.[f])],
    ...(data?.metrics.match_similarity ? [/** @type {[string, string]} */ (["pair similarity", formatNumber(data.metrics.match_similarity[f])])] : []),
  ];
  const gridA = new FilterGrid({
    testid: "compare-grid-a",
    label: "Filters at A",
    describe,
    onSelect: (f) => store.selectFilter(f),
    onHover: (cell) => gridB.echo(cell),
  });
  const gridB = new FilterGrid({
    testid: "compare-grid-b",
    label: "The same filters at B",
    describe,
    name: (f) => (data && data.match[f] !== f ? `Filter #${data.match[f]} (matches A #${f})` : `Filter #${f}`),
    caption: (f) => String(data ? data.match[f] : f),
    onSelect: (f) => store.selectFilter(f),
    onHover: (cell) => gridA.echo(cell),
  });
  /** @param {string} side @param {FilterGrid} grid */
  const gridSide = (side, grid) => {
    const box = el("div", "cvz-compare-side");
    const label = el("div", "cvz-compare-label");
    label.dataset.testid = `compare-label-${side.toLowerCase()}`;
    const row = el("div", "cvz-compare-label-row");
    row.append(label, pngButton(() => grid.canvas, `grid-${side}`));
    box.append(row, grid.element);
    return { box, label };
  };
  const { box: sideA, label: labelA } = gridSide("A", gridA);
  const { box: sideB, label: labelB } = gridSide("B", gridB);
  const pair = el("div", "cvz-compare-grids");
  pair.append(sideA, sideB);

  const table = el("table", "cvz-table");
  table.dataset.testid = "compare-table";
  const thead = el("thead");
  const headRow = el("tr");
  /** @type {Map<Metric, HTMLButtonElement>} */
  const sortButtons = new Map();
  headRow.append(el("th", "cvz-num", "Rank"), el("th", "cvz-num", "A"), el("th", "cvz-num", "B"));
  for (const m of /** @type {Metric[]} */ (Object.keys(METRIC_NAMES))) {
    const th = el("th", m === "cosine_distance" ? "cvz-bar-col" : "cvz-num");
    const button = sortButton(METRIC_NAMES[m], `Most changed first by ${METRIC_NAMES[m].toLowerCase()}`, `sort-${m}`, () =>
      store.setCompare({ sort: m }),
    );
    sortButtons.set(m, button);
    th.append(button);
    headRow.append(th);
  }
  thead.append(headRow);
  const tbody = el("tbody");
  table.append(thead, tbody);
  const tableWrap = el("div", "cvz-table-wrap");
  tableWrap.append(table);
  const tableBox = el("div", "cvz-table-box");
  /** Every row in the current order, for the CSV: the table itself may show only the first ones. */
  let allRows = () => /** @type {Element[]} */ ([]);
  const tableHead = el("div", "cvz-table-tools");
  tableHead.append(csvButton(/** @type {HTMLTableElement} */ (table), "drift", () => [headRow, ...allRows()]));
  /** Draws the table's rows again (the current answer's, once there is one). */
  let fillTable = () => {};
  const limit = new RowLimit("compare-show-all", () => fillTable());
  tableBox.append(tableHead, tableWrap, limit.button);
  const summary = el("div", "cvz-compare-summary");
  summary.dataset.testid = "compare-summary";
  const bottom = el("div", "cvz-compare-bottom");
  bottom.append(tableBox, summary);

  const visBox = section("Feature visualisations of the pairs", "compare-visualizations");
  const visBody = el("div", "");
  visBox.append(visBody);
  /** What the pairs were drawn from. */
  let visDrawn = /** @type {unknown[]} */ ([]);

  card.append(head, controls, headline, basis, message, pair, visBox, bottom);
  root.append(card);

  /** What was drawn last, so unrelated state changes do not redraw. */
  let drawn = { data: /** @type {any} */ (null), sort: "", norm: "", filter: /** @type {?number} */ (null) };
  /** @type {{data: any, a: any, b: any}} */
  let decoded = { data: null, a: null, b: null };

  store.subscribe((s) => {
    card.hidden = s.phase !== "ready" || !store.comparing();
    if (card.hidden) {
      drawn = { data: null, sort: "", norm: "", filter: null };
      return;
    }
    const entry = store.layerEntry();
    const steps = entry?.steps ?? [];
    const epochs = s.mode === "epochs";
    const q = store.compareQuery();
    title.textContent = `${epochs ? "Epoch vs epoch" : "Run vs run"} · layer ${s.layer}`;
    sub.textContent = epochs
      ? `run ${s.run}: how each filter changed between two steps`
      : `the same layer in two runs, filters ${{ match: "paired by similarity", aligned: "paired by similarity, inputs aligned", index: "paired by index" }[q.align]}`;
    const stepOptions = (/** @type {number[]} */ list) => list.map((x) => ({ value: String(x), text: String(x) }));
    stepA.element.hidden = !epochs;
    runB.element.hidden = stepB.element.hidden = align.element.hidden = epochs;
    pairStep.element.hidden = epochs || q.align === "index";
    if (epochs) {
      stepA.setOptions(stepOptions(steps), String(q.stepA));
    } else {
      runB.setOptions(
        store.runBChoices().map((r) => ({ value: r.run, text: r.run })),
        q.runB,
      );
      stepB.setOptions(stepOptions(store.layerEntry(q.runB)?.steps ?? []), String(q.stepB));
      align.setValue(q.align);
      pairStep.setOptions([{ value: "-1", text: "last step both have" }, ...stepOptions(steps)], String(q.pairStep));
    }

    const load = s.compare.load;
    card.dataset.loading = String(load.status === "loading");
    if (load.status === "error") {
      message.textContent = `Could not compare: ${load.error}`;
      message.hidden = false;
      pair.hidden = bottom.hidden = basis.hidden = headline.hidden = true;
      drawn.data = null;
      return;
    }
    if (!load.data) {
      // The first run-vs-run answer of a layer solves the pairing (seconds for thousands of filters).
      message.textContent =
        !epochs && q.align !== "index"
          ? "Pairing the two runs' filters by their responses (solved once per run pair and layer; a large layer takes a few seconds, later steps reuse it)…"
          : "Comparing…";
      message.hidden = false;
      pair.hidden = bottom.hidden = basis.hidden = headline.hidden = true;
      return;
    }
    message.hidden = true;
    pair.hidden = bottom.hidden = basis.hidden = false;
    visBox.hidden = epochs || !hasFeatureVis(s.names, entry ?? null) || !hasFeatureVis(s.names, store.layerEntry(q.runB) ?? null);
    const visNow = [load.data, s.featureVis.runA, s.featureVis.runB, s.compare.sort];
    if (!visBox.hidden && !visNow.every((v, i) => v === visDrawn[i])) {
      visDrawn = visNow;
      const ranked = rankBy(load.data, s.compare.sort);
      visBody.replaceChildren(...visualizationPairs(s.featureVis.runA, s.featureVis.runB, load.data.match, ranked, (f) => store.selectFilter(f)));
    }
    if (drawn.data === load.data && drawn.sort === s.compare.sort && drawn.norm === s.norm && drawn.filter === s.filter) return;
    const onlySelection = drawn.data === load.data && drawn.sort === s.compare.sort && drawn.norm === s.norm;
    drawn = { data: load.data, sort: s.compare.sort, norm: s.norm, filter: s.filter };
    data = load.data;
    metric = s.compare.sort;
    const since = decoded.data === data ? performance.now() : data.receivedAt;
    if (decoded.data !== data) decoded = { data, a: decodeWire(data.tiles_a), b: decodeWire(data.tiles_b) };

    fillHeadline(headline, data);
    basis.textContent = `${BASIS[/** @type {keyof typeof BASIS} */ (data.basis)] ?? data.basis}${pairingText(data)}`;
    basis.dataset.basis = data.basis;
    setExportParts(card, [data.layer, `${data.a.run}-step${data.a.step}`, "vs", `${data.b.run}-step${data.b.step}`]);
    basis.dataset.matchBasis = data.match_basis ?? "";
    labelA.textContent = `A · ${data.a.run} · step ${data.a.step}`;
    labelB.textContent = `B · ${data.b.run} · step ${data.b.step}`;

    const order = rankBy(data, metric);
    const [sa, sb] = [scaleOf(decoded.a.values, "diverging"), scaleOf(decoded.b.values, "diverging")];
    const shared = s.norm === "layer" ? { lo: Math.min(sa.lo, sb.lo), hi: Math.max(sa.hi, sb.hi) } : undefined;
    drawLegend(legend, "diverging", shared ?? null, "one scale for A and B");
    for (const [grid, tiles] of [[gridA, decoded.a], [gridB, decoded.b]]) {
      grid.draw({
        values: tiles.values,
        itemShape: tiles.shape.slice(1),
        count: data.filters,
        order,
        lut: DIVERGING,
        kind: "diverging",
        norm: s.norm,
        layerScale: shared,
        selected: s.filter,
        strip: tiles.shape.length === 3,
        receivedAt: since,
      });
    }
    for (const [m, button] of sortButtons) button.setAttribute("aria-pressed", String(m === metric));
    if (onlySelection) markSelected(tbody, s.filter); // the grids show the selection; the table stays
    else {
      const answer = data;
      const key = [answer.layer, answer.a.run, answer.a.step, answer.b.run, answer.b.step, metric].join("\0");
      const rowsOf = (/** @type {number[]} */ filters) => driftRows(answer, filters, store.state.filter, (f) => store.selectFilter(f));
      fillTable = () => tbody.replaceChildren(...rowsOf(limit.take(key, order)));
      allRows = () => rowsOf(order);
      fillTable();
    }
    fillSummary(summary, data);
    card.dataset.sort = metric;
  });
}

/**
 * How B's filters were paired with A's, for people: by what they do on the probe or by their weights,
 * and for "aligned" which layer's pairing put B's input channels in A's order.
 * @param {any} data the /compare payload @returns {string}
 */
function pairingText(data) {
  if (!data.match_basis) return "";
  const by =
    data.match_basis === "activations"
      ? " Filters of B are paired by activations on the probe: each A filter with the B filter that responds most alike (optimal assignment on response profiles); independently trained runs learn similar filters in different slots."
      : " Filters of B are paired by weights (|cosine|): no response profiles were logged at both steps.";
  const inputs = data.aligned_inputs
    ? ` B's kernels are read with their input channels in A's order, from the pairing of layer ${data.aligned_inputs.layer} (by ${data.aligned_inputs.basis}).`
    : data.align === "aligned"
      ? " Input channels are not reordered: this layer reads the input itself (or full kernels were not kept)."
      : "";
  return `${by}${inputs} Drift is sign-aware: a pair whose kernels match with one negated is marked ± and measured against the negation.`;
}

/**
 * Run vs run's headline: how alike the paired filters respond, against what pairing reaches by
 * chance; then their weight drift (sign-aware). Hidden for epoch vs epoch and pairing by index.
 * @param {HTMLElement} box @param {any} data the /compare payload
 */
function fillHeadline(box, data) {
  const pairing = data.pairing;
  box.hidden = !pairing;
  if (!pairing) return;
  const drift = /** @type {number[]} */ (data.metrics.cosine_distance.filter((/** @type {?number} */ v) => v !== null));
  const lead = el("div", "cvz-compare-headline-lead");
  lead.dataset.testid = "compare-headline-similarity";
  lead.dataset.median = String(pairing.median_similarity);
  lead.dataset.chance = String(pairing.chance);
  // No test here, only a comparison: within 0.1 of chance the pairs say little either way.
  const gap = pairing.median_similarity - pairing.chance;
  const verdict = !Number.isFinite(gap) ? "" : gap >= 0.1 ? ": pairs respond alike, well above chance" : gap > -0.1 ? ": near chance, the pairs say little" : ": below chance";
  lead.dataset.verdict = verdict;
  lead.append(el("strong", "", `Pair similarity: median ${formatFixed(pairing.median_similarity)}, chance ${formatFixed(pairing.chance)}${verdict}`));
  const shown = data.median_similarity !== null && (data.a.step !== pairing.pair_step || data.b.step !== pairing.pair_step)
    ? `; at the shown steps ${formatFixed(data.median_similarity)}` : "";
  const how = el("div", "cvz-legend-note",
    `|correlation| of each pair's mean responses on ${pairing.images} probe images, paired at step ${pairing.pair_step}${shown}. ` +
    `Chance: the median an optimal pairing reaches with B's images shuffled (${pairing.shuffles} draw${pairing.shuffles === 1 ? "" : "s"}).`);
  const second = el("div", "cvz-compare-headline-drift");
  second.dataset.testid = "compare-headline-drift";
  const flipped = data.sign_flipped ?? 0;
  second.textContent = `Weight drift of the pairs (sign-aware, 0 same … 1 orthogonal): median ${formatFixed(median(drift))}` +
    (flipped ? `; ${flipped} pair${flipped === 1 ? "" : "s"} match with one kernel negated (±)` : "");
  box.replaceChildren(lead, how, second);
}

/**
 * The drift table's rows for `filters`, the first ones of the table's order (rank = position).
 * @param {any} data @param {number[]} filters @param {?number} selected
 * @param {(filter: number) => void} onSelect
 * @returns {HTMLElement[]}
 */
function driftRows(data, filters, selected, onSelect) {
  const drift = data.metrics.cosine_distance;
  const top = Math.max(1e-12, ...drift.filter((/** @type {?number} */ v) => v !== null));
  return filters.map((f, rank) => {
    const row = filterTableRow("compare-row", f, selected, onSelect);
    const bar = el("span", "cvz-rank-bar");
    bar.style.width = `${Math.max(1, ((drift[f] ?? 0) / top) * 100)}%`;
    const track = el("span", "cvz-rank-track");
    track.append(bar);
    const driftCell = el("td", "cvz-bar-col");
    const barBox = el("div", "cvz-bar-cell");
    barBox.append(track, el("span", "cvz-bar-value", formatNumber(drift[f])));
    driftCell.append(barBox);
    row.append(
      el("td", "cvz-num", String(rank + 1)),
      el("td", "cvz-num", `#${f}`),
      flippedCell(data, f),
      driftCell,
      el("td", "cvz-num", formatPercent(data.metrics.norm_change[f])),
      el("td", "cvz-num", formatNumber(data.metrics.act_mean_change?.[f])),
    );
    return row;
  });
}

/**
 * B's partner of filter `f`, marked ± when their kernels match with one negated.
 * @param {any} data @param {number} f @returns {HTMLElement}
 */
function flippedCell(data, f) {
  const flipped = data.metrics.sign_flipped?.[f] === 1;
  const cell = el("td", "cvz-num", `#${data.match[f]}${flipped ? " ±" : ""}`);
  if (flipped) {
    cell.title = "Its kernel matches A's with the sign flipped: drift is measured against the negation";
    cell.dataset.flipped = "true";
  }
  return cell;
}

/**
 * How much the layer changed as a whole: a few numbers and a histogram of per-filter drift.
 * @param {HTMLElement} box @param {any} data
 */
function fillSummary(box, data) {
  const drift = /** @type {number[]} */ (data.metrics.cosine_distance.filter((/** @type {?number} */ v) => v !== null));
  const facts = el("dl", "cvz-facts cvz-facts-2");
  /** @type {Array<[string, string]>} */
  const rows = [
    ["filters compared", String(data.filters)],
    ["median drift", formatNumber(median(drift))],
    ["drift > 0.5", `${drift.filter((v) => v > 0.5).length} of ${drift.length}`],
    ["mean norm change", formatPercent(mean(data.metrics.norm_change))],
  ];
  if (data.align !== "index") rows.push(["sign-flipped pairs (±)", String(data.sign_flipped ?? 0)]);
  else rows.push(["unchanged (drift < 1e-4)", String(drift.filter((v) => v < 1e-4).length)]);
  for (const [k, v] of rows) facts.append(el("dt", "", k), el("dd", "", v));

  // Histogram over the drift's full range, 20 bins: 0..1 when sign-aware (paired), else 0..2.
  const range = data.align === "index" ? 2 : 1;
  const bins = new Array(20).fill(0);
  for (const v of drift) bins[Math.min(19, Math.max(0, Math.floor((v / range) * 20)))]++;
  const plot = el("figure", "cvz-chart");
  plot.dataset.testid = "drift-histogram";
  const heading = el("h4", "cvz-detail-heading", "Drift per filter");
  heading.append(pngButton(() => plot, "drift-histogram"));
  plot.append(heading, driftHistogram(bins, range));
  box.replaceChildren(el("h4", "cvz-detail-heading", "Layer summary"), facts, plot);
}

/**
 * The drift histogram as an SVG chart with round ticks (ticks.js): drift along x, filters per bin
 * up y (whole numbers), each axis titled, scaled to its panel's width (CSS).
 * @param {number[]} bins filters per bin, equal bins over 0 … range @param {number} range
 */
function driftHistogram(bins, range) {
  const [width, height] = [320, 150];
  const pad = { left: 40, right: 10, top: 8, bottom: 32 };
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "cvz-line-chart" });
  root.setAttribute("aria-label", `Histogram of per-filter drift from 0 to ${range}`);
  const yAxis = axisTicks(0, Math.max(1, ...bins), { count: 3, integer: true });
  const xAxis = axisTicks(0, range, { count: 4 });
  const [w, h] = [width - pad.left - pad.right, height - pad.top - pad.bottom];
  const sx = (/** @type {number} */ x) => pad.left + (x / range) * w;
  const sy = (/** @type {number} */ y) => pad.top + (1 - y / yAxis.hi) * h;
  const axis = svg("g", { class: "cvz-chart-axis" });
  /** @param {string} text @param {Record<string, string|number>} attrs @param {string} [tick] */
  const label = (text, attrs, tick) => {
    const t = svg("text", attrs);
    t.textContent = text;
    if (tick) t.dataset.tick = tick;
    axis.append(t);
    return t;
  };
  yAxis.ticks.forEach((tick, i) => {
    axis.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: sy(tick), y2: sy(tick), class: "cvz-chart-grid" }));
    label(yAxis.labels[i], { x: pad.left - 4, y: sy(tick) + 3, "text-anchor": "end" }, "y");
  });
  xAxis.ticks.forEach((tick, i) => {
    axis.append(svg("line", { x1: sx(tick), x2: sx(tick), y1: height - pad.bottom, y2: height - pad.bottom + 3 }));
    label(xAxis.labels[i], { x: sx(tick), y: height - pad.bottom + 13, "text-anchor": "middle" }, "x");
  });
  axis.append(
    svg("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom }),
    svg("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom }),
  );
  label("drift (cosine distance)", { x: pad.left + w / 2, y: height - 3, "text-anchor": "middle", class: "cvz-axis-title" }).dataset.axis = "x";
  const yMid = pad.top + h / 2;
  label("filters", { x: 10, y: yMid, "text-anchor": "middle", transform: `rotate(-90 10 ${yMid})`, class: "cvz-axis-title" }).dataset.axis = "y";
  root.append(axis);
  const bin = range / bins.length;
  bins.forEach((count, i) => {
    const bar = svg("rect", {
      x: sx(i * bin) + 0.5, width: Math.max(1, sx(bin) - sx(0) - 1), y: sy(count), height: Math.max(0, sy(0) - sy(count)),
      class: "cvz-histogram-bar",
    });
    const tip = svg("title", {});
    tip.textContent = `drift ${formatFixed(i * bin)}–${formatFixed((i + 1) * bin)}: ${count} filter${count === 1 ? "" : "s"}`;
    bar.append(tip);
    root.append(bar);
  });
  return root;
}
