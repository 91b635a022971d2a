// The Impact view: every filter of the layer at the slider's step in one sortable table of every
// per-filter column the layer has (/table: impact, statistics, drift, perturbation responses,
// counterfactuals, the user's own metrics), grouped as declared, each header explained by its
// declaration, with flags for counterfactual-sensitive and class-concentrated filters. A row opens
// the filter's detail. Nothing here knows a column by name.

import { absentMessage, answerFor, examplesNeededText, filterValue, recordStepNote } from "../analysis.js";
import {
  columnOrder,
  defaultSortColumn,
  formatValue,
  groupColumns,
  groupTitle,
  headerText,
  headerTitle,
  holdsChanges,
  intervalOf,
  notSignificantText,
  olderRecords,
  scalarText,
  scalarTitle,
  shownColumns,
  tableCsvRows,
} from "../columns.js";
import { formatP, present } from "../numeric.js";
import { adjustedPKey, counterfactualKey, exactKey, significantKey, topExampleKey } from "../recordkeys.js";
import { RowLimit, el, filterTableRow, markSelected, sortButton, svg, viewCard } from "./controls.js";
import { dataCsvButton, setExportParts } from "./download.js";
import { shapeTextureSection } from "./shapetexture.js";

/**
 * @typedef {import("../analysis.js").Arrays} Arrays
 * @typedef {import("../recordkeys.js").RecordNames} RecordNames
 * @typedef {import("../columns.js").Column} Column
 * @typedef {import("../columns.js").Table} Table
 */

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
      const q = filterValue(responses, counterfactualKey(names, name, "q"), f);
      flags.push({
        flag: "counterfactual",
        text: q !== null ? `${name} (q ${formatP(q)})` : name,
        title:
          `Reacts to "${name}" far more than the layer's other filters` +
          (q !== null ? `; q ${formatP(q)}: Benjamini–Hochberg-adjusted p of a paired t test over the probe's images` : ""),
      });
    }
  }
  if (filterValue(impact, topExampleKey(names, "flag"), f)) {
    const cls = filterValue(impact, topExampleKey(names, "class"), f);
    flags.push({ flag: "class", text: `class ${cls}`, title: `≥ 90 % of its top activating probe examples are class ${cls}` });
  }
  return flags;
}

/**
 * One value of the table, NaN for missing or absent.
 * @param {Table} table @param {string} name @param {number} f
 */
function valueOf(table, name, f) {
  const a = table.values[name];
  return a && a.shape.length === 1 ? Number(a.values[f]) : NaN;
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
  if (value !== null && present(value)) bar.append(svg("circle", { cx: x(value), cy: 5, r: 2, class: "cvz-errorbar-value" }));
  return bar;
}

/**
 * The largest |bound| of a column's intervals: the scale its error bars share.
 * @param {Table} table @param {Column} column
 */
function intervalRange(table, column) {
  const ci = column.ci ? table.values[column.ci] : undefined;
  let top = 1e-9;
  if (ci) for (const v of Array.from(ci.values)) if (present(v)) top = Math.max(top, Math.abs(v));
  return top;
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
    "Δ = without the filter − with it, on the probe. Grey rows: a change that is not significant; italic: not ablated exactly, only estimated. Hover a header for what it means; click it to sort (again to reverse), a row for the filter's detail.",
  );
  const table = el("table", "cvz-table");
  table.dataset.testid = "impact-table";
  const thead = el("thead");
  const tbody = el("tbody");
  table.append(thead, tbody);
  const wrap = el("div", "cvz-table-wrap cvz-impact-wrap");
  wrap.append(table);
  /** The table's numbers as `logs.to_csv` writes them: every filter, raw values. */
  let csvRows = () => /** @type {string[][]} */ ([]);
  const noteRow = el("div", "cvz-table-tools");
  noteRow.append(note, dataCsvButton(card, "impact", () => csvRows()));
  // One switch per column group: a layer has dozens of columns, most views want a few groups.
  const groupBar = el("div", "cvz-group-bar");
  groupBar.dataset.testid = "impact-groups";
  const limit = new RowLimit("impact-show-all", () => {
    shown = [];
    render(store.state);
  });
  card.append(head, messages, summary, needed, groupBar, noteRow, wrap, limit.button, shapeTexture.element);
  root.append(card);

  /** What the table was drawn from, so unrelated state changes do not redraw it. */
  let shown = /** @type {unknown[]} */ ([]);
  /** The column the table was sorted by when last drawn. */
  let sortedBefore = "";
  /** Scroll the table sideways, as little as needs be, to show its sorted column beside the pinned ones. */
  const revealSorted = () => {
    const th = /** @type {?HTMLElement} */ (thead.querySelector('[aria-pressed="true"]')?.parentElement ?? null);
    const flags = /** @type {?HTMLElement} */ (thead.querySelector("th.cvz-flags"));
    if (!th || !flags) return;
    // In the table's own coordinates: offsetLeft counts from the page and, for the sticky pinned
    // columns, moves with the scroll, so it is no measure here.
    const pinned = pinnedWidth(wrap, flags);
    const start = th.getBoundingClientRect().left - wrap.getBoundingClientRect().left - wrap.clientLeft + wrap.scrollLeft;
    const [left, right] = [start - pinned, start + th.offsetWidth - wrap.clientWidth];
    if (wrap.scrollLeft > left) wrap.scrollLeft = Math.max(0, left);
    else if (wrap.scrollLeft < right) wrap.scrollLeft = right;
  };
  // The filter detail opening beside the table narrows it: the sorted column stays in view.
  let wrapWidth = 0;
  new ResizeObserver(() => {
    if (wrap.clientWidth !== wrapWidth && wrapWidth !== 0) revealSorted();
    wrapWidth = wrap.clientWidth;
  }).observe(wrap);

  /** @param {import("../store.js").State} s */
  const render = (s) => {
    card.hidden = s.phase !== "ready" || s.mode !== "impact";
    if (card.hidden) {
      shown = [];
      return;
    }
    const { perturbation, impact, table: tableLoad } = s.analysis;
    const now = [s.run, s.layer, s.step, impact.status, impact.data, perturbation.status, perturbation.data, tableLoad.status,
      tableLoad.data, s.impactSort, s.shapeTexture, s.hiddenGroups];
    if (now.every((v, i) => v === shown[i])) {
      markSelected(tbody, s.filter); // a click on a row: the table stays
      return;
    }
    shown = now;

    title.textContent = `Impact · layer ${s.layer}`;
    sub.textContent = `run ${s.run} · step ${s.step}: every per-filter number of the layer — what the model loses without each filter, how each responds to perturbations, your own metrics`;
    card.dataset.loading = String([impact, perturbation, tableLoad].some((l) => l.status === "loading"));
    card.dataset.step = String(s.step);
    setExportParts(card, [s.run, s.layer, `step${s.step}`]);

    // While the slider's step loads, the previous step's table stays, dimmed.
    const here = { run: s.run, layer: s.layer };
    const impactData = answerFor(impact, here);
    const responseData = answerFor(perturbation, here);
    /** @type {?Table} */
    const tableData = answerFor(tableLoad, here);
    const texts = [/** @type {const} */ (["impact", impact, impactData]), /** @type {const} */ (["perturbation", perturbation, responseData])]
      .map(([kind, load, answer]) => absentMessage(kind, load) || recordStepNote(kind, answer));
    if (tableLoad.status === "error") texts.push(`Could not load the layer's table: ${tableLoad.error}`);
    // Any other record the table reads from an earlier step (a metric logged every few steps).
    const said = new Set([impactData, responseData].filter((a) => a && a.record_step !== a.step).map((a) => a.kind));
    for (const older of tableData ? olderRecords(tableData) : []) {
      if (!said.has(older.kind)) {
        texts.push(`${older.labels.join(", ")} from step ${older.recordStep}, the layer's last such record before step ${s.step}.`);
      }
    }
    messages.replaceChildren(
      ...texts
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
    needed.textContent = examplesNeededText(impactData?.examples_needed);
    needed.hidden = needed.textContent === "";
    if (!tableData) {
      summary.hidden = noteRow.hidden = wrap.hidden = limit.button.hidden = groupBar.hidden = true;
      if (tableLoad.status === "loading" && !messages.childElementCount) {
        messages.append(el("p", "cvz-note", `Loading the filters of layer ${s.layer}…`));
      }
      return;
    }
    summary.hidden = noteRow.hidden = wrap.hidden = groupBar.hidden = false;
    /** @type {?Arrays} */
    const ia = impactData?.arrays ?? null;
    /** @type {?Arrays} */
    const ra = responseData?.arrays ?? null;
    const counterfactuals = responseData?.counterfactuals ?? [];
    const names = s.names;
    const count = tableData.filters;
    const every = shownColumns(tableData);
    fillGroupBar(groupBar, every, s.hiddenGroups, (group, hidden) => store.setGroupHidden(group, hidden));
    const columns = every.filter((c) => !s.hiddenGroups.includes(c.group));
    const chosen = columns.find((c) => c.name === s.impactSort.metric);
    const metric = chosen ?? defaultSortColumn(columns);
    const reverse = chosen !== undefined && s.impactSort.reverse;
    card.dataset.sort = metric?.name ?? "index";
    card.dataset.reverse = String(reverse);
    csvRows = () => tableCsvRows(tableData);

    fillSummary(summary, tableData, every, s.step);

    // Filter and Flags first, both pinned: a wide table scrolls sideways under them. Above the
    // column headers, one header per group spanning its columns.
    const groupRow = el("tr", "cvz-group-row");
    const headRow = el("tr", "cvz-head-row");
    const filterHead = el("th", "cvz-pinned", "Filter");
    filterHead.title = "Filter index in the layer";
    const flagHead = el("th", "cvz-pinned cvz-flags", "Flags");
    flagHead.title = "Reacts far more than the layer's others to a counterfactual edit; top activating examples of one class";
    filterHead.rowSpan = flagHead.rowSpan = 2;
    groupRow.append(filterHead, flagHead);
    for (const { group, columns: inGroup } of groupColumns(columns)) {
      const th = el("th", "cvz-group");
      th.append(el("span", "", groupTitle(group)));
      th.colSpan = inGroup.length;
      th.dataset.testid = "impact-group";
      th.dataset.group = group;
      groupRow.append(th);
    }
    /** Percent columns of changes read signed ("+1.5%"), shares unsigned. */
    const signed = new Map(columns.map((c) => [c.name, holdsChanges(tableData.values[c.name].values)]));
    const ranges = new Map(columns.filter((c) => c.ci).map((c) => [c.name, intervalRange(tableData, c)]));
    columns.forEach((c, k) => {
      const th = el("th", `cvz-num${k === 0 || c.group !== columns[k - 1].group ? " cvz-group-start" : ""}`);
      const active = c === metric;
      const button = sortButton(headerText(c), headerTitle(c, s.step), "impact-sort", () => store.setImpactSort(c.name, active ? !reverse : false));
      button.dataset.metric = c.name;
      button.setAttribute("aria-pressed", String(active));
      if (active && reverse) button.classList.add("cvz-sort-reverse");
      th.append(button);
      headRow.append(th);
    });
    thead.replaceChildren(groupRow, headRow);

    const exact = tableData.values[exactKey(names)] ? exactKey(names) : null;
    const significant = significantKey(names);
    /** @param {number} f */
    const rowOf = (f) => {
      const row = filterTableRow("impact-row", f, s.filter, (g) => store.selectFilter(g));
      const value = metric ? valueOf(tableData, metric.name, f) : f;
      row.dataset.value = present(value) ? String(value) : "";
      const flagCell = el("td", "cvz-pinned cvz-flags");
      for (const flag of flagsOf(ia, ra, counterfactuals, names, f)) {
        const badge = el("span", `cvz-badge cvz-badge-${flag.flag}`, flag.text);
        badge.dataset.testid = "impact-flag";
        badge.dataset.flag = flag.flag;
        badge.title = flag.title;
        flagCell.append(badge);
      }
      // Grey what the numbers cannot tell: not ablated exactly (only estimated), or not significant.
      const estimated = exact !== null && valueOf(tableData, exact, f) === 0;
      if (estimated) {
        row.classList.add("cvz-estimated");
        row.title = "Not ablated exactly at this step (over the exact-ablation budget): only estimates are known";
      } else if (significant && tableData.values[significant] && valueOf(tableData, significant, f) === 0) {
        row.classList.add("cvz-insignificant");
        const adjusted = adjustedPKey(names);
        const why = adjusted ? notSignificantText(tableData, f, significant, adjusted) : null;
        row.title = `Greyed: ${why ?? "the accuracy change of this filter's ablation is not significant on this probe"}`;
      }
      row.append(el("td", "cvz-pinned cvz-filter-cell", `#${f}`), flagCell);
      columns.forEach((c, k) => {
        const v = valueOf(tableData, c.name, f);
        const classes = `cvz-num${c === metric ? " cvz-sorted" : ""}${k === 0 || c.group !== columns[k - 1].group ? " cvz-group-start" : ""}`;
        const cell = el("td", classes, formatValue(c, v, { signed: signed.get(c.name) }));
        const interval = intervalOf(tableData, c, f);
        if (interval) {
          cell.append(errorBar(interval, v, /** @type {number} */ (ranges.get(c.name))));
          cell.title = `${c.label}: 95% interval ${formatValue(c, interval[0], { signed: true })} … ${formatValue(c, interval[1], { signed: true })}`;
        } else if (estimated && !present(v)) {
          cell.title = "not ablated exactly at this step (over the exact-ablation budget): only estimates are known";
        }
        row.append(cell);
      });
      return row;
    };
    const order = metric ? columnOrder(tableData.values[metric.name].values, metric, reverse) : Array.from({ length: count }, (_, f) => f);
    tbody.replaceChildren(...limit.take([s.run, s.layer].join("\0"), order).map(rowOf));
    // A group's name stays in view beside the pinned columns while the table scrolls sideways.
    table.style.setProperty("--cvz-pinned-width", `${pinnedWidth(wrap, flagHead)}px`);
    // A new sort column is scrolled into view beside the pinned columns.
    if (metric && metric.name !== sortedBefore) revealSorted();
    sortedBefore = metric?.name ?? "";
  };
  store.subscribe(render);
}

/**
 * How far the pinned columns reach into the table's scrolled box from its left edge, whatever the
 * scroll: they stay put, so their right edge is where the scrolling columns start to show.
 * @param {HTMLElement} wrap the scrolled box @param {HTMLElement} lastPinned the last pinned header
 */
function pinnedWidth(wrap, lastPinned) {
  return lastPinned.getBoundingClientRect().right - wrap.getBoundingClientRect().left - wrap.clientLeft;
}

/**
 * A switch per column group, saying how many columns it holds; unchecked, the table leaves it out.
 * @param {HTMLElement} bar @param {Column[]} columns @param {string[]} hidden
 * @param {(group: string, hidden: boolean) => void} onToggle
 */
function fillGroupBar(bar, columns, hidden, onToggle) {
  bar.replaceChildren(el("span", "cvz-field-label", "Columns"));
  for (const { group, columns: inGroup } of groupColumns(columns)) {
    const label = /** @type {HTMLLabelElement} */ (el("label", "cvz-group-toggle"));
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !hidden.includes(group);
    box.dataset.group = group;
    box.addEventListener("change", () => onToggle(group, !box.checked));
    label.title = inGroup.map((c) => c.label).join(", ");
    label.append(box, ` ${groupTitle(group)} (${inGroup.length})`);
    bar.append(label);
  }
}

/**
 * The layer at a glance, from its table: each layer-wide number the records declare (probe
 * accuracy, how well the Taylor estimate ranks filters, with the sample it pools) and, for each
 * yes/no column, how many filters it holds for.
 * @param {HTMLElement} box @param {Table & {scalars?: import("../columns.js").LayerScalar[]}} table
 * @param {Column[]} columns @param {number} step the step shown
 */
function fillSummary(box, table, columns, step) {
  /** @type {Array<[string, string, string, string, string]>} label, value, tooltip, testid, name */
  const rows = [];
  for (const scalar of table.scalars ?? []) {
    rows.push([scalar.label, scalarText(scalar), scalarTitle(scalar, step), "layer-scalar", scalar.name]);
  }
  for (const c of columns) {
    if (c.format !== "flag") continue;
    const values = Array.from(table.values[c.name].values).filter(present);
    const yes = values.filter((v) => v).length;
    rows.push([c.label, `${yes} of ${table.filters}`, `${c.description} (filters for which it holds)`, "flag-count", c.name]);
  }
  box.replaceChildren();
  // Each pair in its own group, so a long value (the pooled ρ and its sample) takes the room it needs.
  for (const [label, value, tip, testid, name] of rows) {
    const item = el("div", "cvz-summary-item");
    item.title = tip;
    const dt = el("dt", "", label);
    const dd = el("dd", "", value);
    dd.dataset.testid = testid;
    dd.dataset.name = name;
    item.append(dt, dd);
    box.append(item);
  }
  box.hidden = rows.length === 0;
}
