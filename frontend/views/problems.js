// A notice of the records the server could not read (the index answer's `problems`): the rest of
// the logdir is shown as usual, and what is missing is said rather than silently left out.

import { el } from "./controls.js";

/** Problems listed one by one; beyond, a count. */
const LISTED = 100;

/**
 * One problem in words; a record whose metadata cannot be read is the problem of all its steps.
 * @param {import("../store.js").Problem} p
 */
export function problemText(p) {
  return `run ${p.run} · ${p.tag} · ${p.step === null || p.step === undefined ? "every step" : `step ${p.step}`}: ${p.reason}`;
}

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountProblems(root, store) {
  const box = el("details", "cvz-problems");
  box.dataset.testid = "problems";
  box.setAttribute("role", "note");
  const summary = el("summary", "cvz-problems-summary");
  const list = el("ul", "cvz-problems-list");
  box.append(summary, list);
  root.append(box);

  /** @type {unknown} */
  let shown = null;
  store.subscribe((s) => {
    box.hidden = s.problems.length === 0;
    if (s.problems === shown) return;
    shown = s.problems;
    const n = s.problems.length;
    const first = n ? problemText(s.problems[0]) : "";
    summary.textContent =
      n === 1
        ? `1 record could not be read and is left out: ${first}`
        : `${n} records could not be read and are left out: ${first}${n > 1 ? ` (and ${n - 1} more)` : ""}`;
    list.replaceChildren(
      ...s.problems.slice(0, LISTED).map((p) => {
        const item = el("li", "", problemText(p));
        item.dataset.testid = "problem";
        item.dataset.run = p.run;
        return item;
      }),
      ...(n > LISTED ? [el("li", "", `… and ${n - LISTED} more`)] : []),
    );
  });
}
