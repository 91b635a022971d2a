// Small pieces shared by the views: a view's card, a labelled <select>, a segmented button group,
// a detail section, a sortable table's buttons and rows.
// Option labels come from data (run and layer names) and are set as text, never as HTML.

import { pngButton } from "./download.js";

/**
 * @param {string} tag @param {string} [className] @param {string} [text]
 * @returns {HTMLElement}
 */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * A view's card with its head: a title and a subtitle under it.
 * @param {string} className @param {string} testid
 */
export function viewCard(className, testid) {
  const card = el("section", className);
  card.dataset.testid = testid;
  const head = el("div", "cvz-card-head");
  const title = el("h2", "cvz-card-title");
  const sub = el("div", "cvz-card-sub");
  head.append(title, sub);
  return { card, head, title, sub };
}

/**
 * A table header's sort button; the caller marks which one is active.
 * @param {string} label @param {string} title @param {string} testid @param {() => void} onClick
 */
export function sortButton(label, title, testid, onClick) {
  const button = /** @type {HTMLButtonElement} */ (el("button", "cvz-sort", label));
  button.type = "button";
  button.title = title;
  button.dataset.testid = testid;
  button.addEventListener("click", onClick);
  return button;
}

// Rows a filter table draws before "show all": enough to scan, few enough to lay out at once.
export const TABLE_ROWS = 256;

/**
 * The first TABLE_ROWS rows of a long filter table and a button that draws the rest: a 2048-filter
 * layer's full table takes the browser seconds to lay out again whenever the page moves (the
 * detail panel opening). Expanding holds for one table `key` (e.g. run and layer) until another.
 */
export class RowLimit {
  /** @param {string} testid the button's @param {() => void} redraw draws the table again */
  constructor(testid, redraw) {
    this.button = el("button", "cvz-more");
    this.button.type = "button";
    this.button.dataset.testid = testid;
    this.button.hidden = true;
    this.key = "";
    this.expanded = "";
    this.button.addEventListener("click", () => {
      this.expanded = this.key;
      redraw();
    });
  }

  /**
   * The part of `order` to draw for table `key`; updates the button.
   * @param {string} key @param {number[]} order @returns {number[]}
   */
  take(key, order) {
    this.key = key;
    const rows = this.expanded === key ? order : order.slice(0, TABLE_ROWS);
    this.button.hidden = rows.length === order.length;
    this.button.textContent = `Showing the first ${rows.length} of ${order.length} filters in this order: show all (slower)`;
    return rows;
  }
}

/**
 * Move a filter table's selection to `selected` without rebuilding it: a 2048-filter layer's table
 * takes seconds to rebuild, a click on one of its rows must not.
 * @param {HTMLElement} tbody rows made by `filterTableRow` @param {?number} selected
 */
export function markSelected(tbody, selected) {
  const want = selected === null ? "" : String(selected);
  for (const row of tbody.querySelectorAll('tr[aria-selected="true"]')) {
    if (/** @type {HTMLElement} */ (row).dataset.filter !== want) row.setAttribute("aria-selected", "false");
  }
  if (want) tbody.querySelector(`tr[data-filter="${want}"]`)?.setAttribute("aria-selected", "true");
}

/**
 * A table row for filter `f` that selects it on click or Enter; the caller appends its cells.
 * @param {string} testid @param {number} f @param {?number} selected
 * @param {(filter: number) => void} onSelect
 */
export function filterTableRow(testid, f, selected, onSelect) {
  const row = el("tr", "cvz-row");
  row.dataset.testid = testid;
  row.dataset.filter = String(f);
  row.tabIndex = 0;
  row.setAttribute("aria-selected", String(f === selected));
  row.addEventListener("click", () => onSelect(f));
  row.addEventListener("keydown", (e) => {
    if (e.key === "Enter") onSelect(f);
  });
  return row;
}

/**
 * A titled section of the filter detail, with a button that saves it as PNG.
 * @param {string} title @param {string} testid
 */
export function section(title, testid) {
  const box = el("section", "cvz-detail-section");
  box.dataset.testid = testid;
  const heading = el("h4", "cvz-detail-heading", title);
  heading.append(pngButton(() => box, title));
  box.append(heading);
  return box;
}

/**
 * Label–value pairs as a definition list; a pair's optional third item is the value's test id, its
 * fourth what the label means (a tooltip).
 * @param {Array<[string, string] | [string, string, string] | [string, string, string, string]>} rows
 * @param {string} [className]
 */
export function factList(rows, className = "cvz-facts cvz-facts-2") {
  const facts = el("dl", className);
  for (const [label, value, testid, title] of rows) {
    const dd = el("dd", "", value);
    if (testid) dd.dataset.testid = testid;
    const dt = el("dt", "", label);
    if (title) dt.title = title;
    facts.append(dt, dd);
  }
  return facts;
}

/**
 * A labelled select.
 * @param {string} label @param {string} testid @param {(value: string) => void} onChange
 */
export function labelledSelect(label, testid, onChange) {
  const wrap = /** @type {HTMLLabelElement} */ (el("label", "cvz-field"));
  wrap.append(el("span", "cvz-field-label", label));
  const select = document.createElement("select");
  select.dataset.testid = testid;
  select.addEventListener("change", () => onChange(select.value));
  wrap.append(select);
  return {
    element: wrap,
    select,
    /**
     * @param {Array<{value: string, text: string, disabled?: boolean}>} options
     * @param {string} value
     */
    setOptions(options, value) {
      const same =
        select.options.length === options.length &&
        options.every((o, i) => select.options[i].value === o.value && select.options[i].text === o.text &&
          select.options[i].disabled === Boolean(o.disabled));
      if (!same) {
        select.replaceChildren(
          ...options.map((o) => {
            const option = document.createElement("option");
            option.value = o.value;
            option.textContent = o.text;
            option.disabled = Boolean(o.disabled);
            return option;
          }),
        );
      }
      select.value = value;
    },
  };
}

/**
 * A row of toggle buttons, one pressed.
 * @param {string} label @param {string} testid
 * @param {Array<{value: string, text: string}>} options
 * @param {(value: string) => void} onChange
 */
export function segmented(label, testid, options, onChange) {
  const wrap = el("div", "cvz-field");
  wrap.append(el("span", "cvz-field-label", label));
  const group = el("div", "cvz-segmented");
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", label);
  group.dataset.testid = testid;
  /** @type {Map<string, HTMLButtonElement>} */
  const buttons = new Map();
  for (const o of options) {
    const button = /** @type {HTMLButtonElement} */ (el("button", "cvz-segment", o.text));
    button.type = "button";
    button.dataset.value = o.value;
    button.addEventListener("click", () => onChange(o.value));
    buttons.set(o.value, button);
    group.append(button);
  }
  wrap.append(group);
  return {
    element: wrap,
    /** @param {string} value @param {Record<string, string>} [disabled] value → reason */
    setValue(value, disabled = {}) {
      for (const [v, button] of buttons) {
        button.setAttribute("aria-pressed", String(v === value));
        button.disabled = v in disabled;
        button.title = disabled[v] ?? "";
      }
    },
  };
}

const SVG = "http://www.w3.org/2000/svg";

/**
 * An SVG element with its attributes: the one helper every chart, heatmap and error bar draws with.
 * @param {string} tag @param {Record<string, string|number>} attrs
 * @returns {SVGElement}
 */
export function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}
