// The Findings view, what a run opens on: what its logs say to look at, across every layer at the
// slider's step, grouped by kind (the kinds, their labels and rules come from /findings, declared
// once in tb_convviz/analysis/findings.py). Each finding is one line with its numbers and how sure
// they are, and a link that opens the view showing its evidence with the layer, step, sort column
// and filter selected. Kinds the logs cannot support say why and which option turns them on.

import { el, viewCard } from "./controls.js";

/** @typedef {import("../store.js").Store} Store */
/**
 * @typedef {{kind: string, layer: ?string, filters: number[], classes: number[], summary: string,
 *   evidence: Record<string, any>, rule: string, certainty: string, severity: number,
 *   view: import("../urlstate.js").ViewState}} Finding
 * @typedef {{name: string, label: string, description: string, rule: string, enable: string, mode: string}} Kind
 */

/** What the link of a finding opens, in words. @type {Record<string, string>} */
const VIEW_NAMES = { impact: "Impact", filters: "Filters", similarity: "Similarity" };

/**
 * The findings grouped by kind, in the kinds' declared order, each kind's findings as ranked.
 * @param {Finding[]} findings @param {Kind[]} kinds @returns {Array<{kind: Kind, items: Finding[]}>}
 */
export function groupByKind(findings, kinds) {
  return kinds
    .map((kind) => ({ kind, items: findings.filter((f) => f.kind === kind.name) }))
    .filter((g) => g.items.length > 0);
}

/** @param {HTMLElement} root @param {Store} store */
export function mountFindings(root, store) {
  const { card, head, title, sub } = viewCard("cvz-card cvz-findings", "findings-view");
  title.textContent = "Findings";
  const probe = el("p", "cvz-note");
  probe.dataset.testid = "findings-probe";
  const message = el("p", "cvz-note");
  const list = el("div", "cvz-findings-list");
  const unavailable = el("details", "cvz-findings-unavailable");
  unavailable.dataset.testid = "findings-unavailable";
  card.append(head, probe, message, list, unavailable);
  root.append(card);

  /** @type {unknown} */
  let drawn = null;
  store.subscribe((s) => {
    card.hidden = s.phase !== "ready" || s.mode !== "findings";
    if (card.hidden) return;
    const load = s.findings;
    card.dataset.loading = String(load.status === "loading");
    sub.textContent = `run ${s.run} · step ${s.step}: what the logs say to look at, across every layer, most severe first`;
    if (load.status === "error") {
      message.textContent = `Findings could not be computed: ${load.error}`;
      list.replaceChildren();
      drawn = null;
      return;
    }
    if (load.status !== "ready" || load.data === drawn) return;
    drawn = load.data;
    draw(load.data);
  });

  /** @param {any} data */
  function draw(data) {
    card.dataset.step = String(data.step);
    card.dataset.run = data.run;
    const p = data.probe;
    const classes = p.labelled ? `${p.classes.length} classes (${p.support.map((n, i) => `${p.classes[i]}: ${n}`).join(", ")})` : "no labels";
    probe.textContent = `${data.layers} conv layers, ${data.filters.toLocaleString()} filters · probe of ${p.n ?? "?"} images, ${classes} · α = ${Number(data.alpha.toPrecision(3))} · tb_convviz ${data.version}`;
    /** @type {Finding[]} */
    const findings = data.findings;
    message.textContent = findings.length
      ? "Each line says what was found and how sure it is; its link opens the view with the evidence."
      : "Nothing in these logs meets a finding's rule at this step.";
    list.replaceChildren(...groupByKind(findings, data.kinds).map(({ kind, items }) => group(kind, items, data.counts[kind.name] ?? items.length)));
    const missing = /** @type {Array<{kind: string, reason: string, enable: string}>} */ (data.unavailable);
    const labels = Object.fromEntries(/** @type {Kind[]} */ (data.kinds).map((k) => [k.name, k.label]));
    unavailable.hidden = missing.length === 0;
    const summary = el("summary", "", `Not looked for (${missing.length}): ${missing.map((m) => labels[m.kind]).join(", ")}`);
    unavailable.replaceChildren(
      summary,
      ...missing.map((m) => {
        const line = el("p", "cvz-note");
        line.dataset.testid = "findings-unavailable-kind";
        line.dataset.kind = m.kind;
        line.append(el("strong", "", `${labels[m.kind]}: `), document.createTextNode(`${m.reason}. Enable: `), el("code", "", m.enable));
        return line;
      }),
    );
  }

  /** @param {Kind} kind @param {Finding[]} items @param {number} total */
  function group(kind, items, total) {
    const box = el("section", "cvz-findings-group");
    box.dataset.testid = "findings-group";
    box.dataset.kind = kind.name;
    const heading = el("h3", "cvz-findings-kind", `${kind.label} (${total > items.length ? `${items.length} of ${total}` : total})`);
    heading.title = kind.rule;
    const about = el("p", "cvz-note", `${kind.description} Rule: ${kind.rule}.`);
    const rows = el("ul", "cvz-findings-items");
    rows.append(...items.map((f) => line(f)));
    box.append(heading, about, rows);
    return box;
  }

  /** @param {Finding} f */
  function line(f) {
    const item = el("li", "cvz-finding");
    item.dataset.testid = "finding";
    item.dataset.kind = f.kind;
    item.dataset.layer = f.layer ?? "";
    item.dataset.filters = f.filters.join(",");
    const text = el("span", "cvz-finding-summary", f.summary);
    const sure = el("span", "cvz-finding-certainty", ` — ${f.certainty}`);
    const link = /** @type {HTMLButtonElement} */ (el("button", "cvz-link", `open in ${VIEW_NAMES[f.view.view ?? ""] ?? f.view.view} ›`));
    link.type = "button";
    link.dataset.testid = "finding-link";
    link.title = `${f.view.layer ? `layer ${f.view.layer}, ` : ""}step ${f.view.step}${f.view.sort ? `, sorted by ${f.view.sort}` : ""}${f.view.filter !== undefined ? `, filter ${f.view.filter}` : ""}`;
    link.addEventListener("click", () => store.openView(f.view));
    item.append(text, sure, document.createTextNode(" "), link);
    return item;
  }
}
