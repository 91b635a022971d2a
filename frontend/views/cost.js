// The cost line under the step slider: what the log at the slider's step cost, as one line —
// "this log: 97 s — impact 61 s (63%), perturbation 22 s (23%), …" — each part's probe passes on
// hover, and the warning when analysis is slower than training, naming what to change.

import { SHOWN_PARTS, costAt, formatSeconds, partText, partTitle, passesText, rankParts, slowWarning } from "../costline.js";
import { el } from "./controls.js";

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountCost(root, store) {
  const row = el("div", "cvz-cost-row");
  row.dataset.testid = "cost-line";
  const label = el("span", "cvz-field-label", "Log cost");
  label.title =
    "What the analysis of this step's log cost, by part, in wall-clock seconds; hover a part for its CPU time and its cost in passes of the probe (the log's own probe pass is one)";
  const text = el("span", "cvz-cost-text");
  text.dataset.testid = "cost-text";
  const warning = el("p", "cvz-cost-warning");
  warning.dataset.testid = "cost-warning";
  warning.setAttribute("role", "note");
  const line = el("div", "cvz-cost-line");
  line.append(label, text);
  row.append(line, warning);
  root.append(row);

  /** What the row was drawn from. */
  let shown = /** @type {unknown[]} */ ([]);
  store.subscribe((s) => {
    const load = s.cost;
    const answer = load.status === "ready" && load.data?.run === s.run ? load.data : null;
    const cost = answer ? costAt(answer, s.step) : undefined;
    // A step the answer does not list (nothing logged there yet), a log from before costs were
    // kept (null) and a run still loading say nothing.
    row.hidden = s.phase !== "ready" || (load.status !== "error" && (cost === undefined || cost === null));
    if (row.hidden) {
      shown = [];
      return;
    }
    const now = [s.run, s.step, load];
    if (now.every((v, i) => v === shown[i])) return;
    shown = now;
    row.dataset.run = s.run;
    row.dataset.step = String(s.step);
    warning.hidden = true;
    delete row.dataset.largest;
    delete row.dataset.slow;
    if (load.status === "error") {
      text.replaceChildren(`Could not load what this run's logs cost: ${load.error}`);
      return;
    }
    if (!cost) return;
    const ranked = rankParts(cost);
    row.dataset.largest = ranked[0]?.name ?? "";
    const total = el("span", "cvz-cost-total", `this log: ${formatSeconds(cost.wall_s)}`);
    total.dataset.testid = "cost-total";
    total.title =
      `The parts add up to ${formatSeconds(cost.wall_s)} of wall-clock time (${formatSeconds(cost.cpu_s)} CPU); ` +
      `the log took ${formatSeconds(cost.span_s)} from start to end.` +
      (cost.since_last_log_s !== null ? ` Training since the previous log: ${formatSeconds(cost.since_last_log_s)}.` : "");
    const passes = passesText(cost.forward_equivalents);
    const parts = ranked.slice(0, SHOWN_PARTS).map((part, k) => {
      const span = el("span", `cvz-cost-part${k === 0 ? " cvz-cost-largest" : ""}`, partText(part));
      span.dataset.testid = "cost-part";
      span.dataset.part = part.name;
      span.title = partTitle(part, cost.forward_s);
      return span;
    });
    /** @type {Array<string|HTMLElement>} */
    const children = [total];
    if (passes) children.push(" ", el("span", "cvz-cost-passes", `(${passes})`));
    children.push(" — ");
    parts.forEach((span, k) => children.push(...(k ? [", ", span] : [span])));
    const rest = ranked.slice(SHOWN_PARTS);
    if (rest.length) {
      const more = el("span", "cvz-cost-part cvz-cost-more", "…");
      more.title = rest.map((part) => partTitle(part, cost.forward_s)).join("\n");
      children.push(", ", more);
    }
    text.replaceChildren(...children);
    const slow = slowWarning(cost, /** @type {import("../costline.js").Advice} */ (answer));
    row.dataset.slow = String(slow !== "");
    warning.textContent = slow;
    warning.hidden = slow === "";
  });
}
