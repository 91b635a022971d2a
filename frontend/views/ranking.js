// The drift ranking beside the grid: which filters moved most since the first logged step (by
// default: between consecutive steps late in training, drift is often ~1e-7 and ranks noise) or
// since the previous one.

import { formatNumber, formatPercent, sortOrder } from "../numeric.js";
import { driftKeys } from "../recordkeys.js";
import { el, segmented } from "./controls.js";
import { pngButton, setExportParts } from "./download.js";

const SHOWN = 10;

/** @typedef {import("../store.js").State["driftSince"]} Since */

/** What each baseline is, for people. */
const BASELINES = { first: "the first logged step", previous: "the previous logged step" };

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountRanking(root, store) {
  const card = el("section", "cvz-card cvz-ranking");
  card.dataset.testid = "drift-ranking";
  const title = el("h3", "cvz-card-title");
  const since = segmented(
    "Since",
    "drift-since",
    [
      { value: "first", text: "First step" },
      { value: "previous", text: "Previous step" },
    ],
    (v) => store.setView({ driftSince: /** @type {Since} */ (v) }),
  );
  since.element.classList.add("cvz-inline-field");
  const sub = el("div", "cvz-card-sub");
  const list = el("ol", "cvz-rank-list");
  const head = el("div", "cvz-card-head cvz-ranking-head");
  head.append(title, pngButton(() => card, "drift-ranking"));
  card.append(head, since.element, sub, list);
  root.append(card);

  store.subscribe((s) => {
    const data = s.layerData.data;
    card.hidden = s.phase !== "ready" || s.mode !== "filters" || !data || data.layer !== s.layer;
    if (card.hidden) return;
    since.setValue(s.driftSince);
    // The stats each baseline reads, as the run declares them (the callback logs the norm change
    // against the previous step only).
    const keys = driftKeys(store.runEntry()?.columns ?? []);
    const first = s.driftSince === "first";
    const driftName = first ? keys.first : keys.previous;
    const normName = first ? null : keys.normPrevious;
    const base = first ? data.first_step : data.prev_step;
    const drift = /** @type {?Array<?number>} */ (driftName ? data.stats[driftName] : null);
    card.dataset.step = String(data.step);
    setExportParts(card, [data.run, data.layer, `step${data.step}`]);
    card.dataset.since = s.driftSince;
    if (base === null || base === undefined || base === data.step || !drift) {
      title.textContent = "Drift";
      sub.textContent = `Step ${data.step} is the first logged step: nothing earlier to compare with.`;
      list.replaceChildren();
      return;
    }
    title.textContent = `Most changed since step ${base}`;
    sub.textContent = `Cosine distance of each filter's weights to ${BASELINES[s.driftSince]} (0 = same direction).`;
    const order = sortOrder(drift, true).slice(0, SHOWN);
    const top = Math.max(...order.map((f) => drift[f] ?? 0)) || 1;
    const norm = normName ? data.stats[normName] : null;
    list.replaceChildren(
      ...order.map((f) => {
        const item = el("li");
        const button = /** @type {HTMLButtonElement} */ (el("button", "cvz-rank-item"));
        button.type = "button";
        button.dataset.testid = "drift-rank-item";
        button.dataset.filter = String(f);
        button.setAttribute("aria-pressed", String(s.filter === f));
        const bar = el("span", "cvz-rank-bar");
        bar.style.width = `${Math.max(2, ((drift[f] ?? 0) / top) * 100)}%`;
        const track = el("span", "cvz-rank-track");
        track.append(bar);
        if (norm) button.title = `norm change ${formatPercent(norm[f])}`;
        button.append(el("span", "cvz-rank-name", `#${f}`), track, el("span", "cvz-rank-value", formatNumber(drift[f])));
        button.addEventListener("click", () => store.selectFilter(f));
        item.append(button);
        return item;
      }),
    );
  });
}
