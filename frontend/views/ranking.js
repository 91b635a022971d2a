// The drift ranking beside the grid: which filters moved most since the previous logged step.

import { formatNumber, formatPercent, sortOrder } from "../numeric.js";
import { el } from "./controls.js";

const SHOWN = 10;

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountRanking(root, store) {
  const card = el("section", "cvz-card cvz-ranking");
  card.dataset.testid = "drift-ranking";
  const title = el("h3", "cvz-card-title");
  const sub = el("div", "cvz-card-sub");
  const list = el("ol", "cvz-rank-list");
  card.append(title, sub, list);
  root.append(card);

  store.subscribe((s) => {
    const data = s.layerData.data;
    card.hidden = s.phase !== "ready" || s.mode !== "filters" || !data || data.layer !== s.layer;
    if (card.hidden) return;
    const drift = data.stats.cosine_distance_prev;
    const first = data.prev_step === null || data.prev_step === data.step;
    title.textContent = first ? "Drift" : `Most changed since step ${data.prev_step}`;
    card.dataset.step = String(data.step);
    if (first || !drift) {
      sub.textContent = `Step ${data.step} is the first logged step: nothing earlier to compare with.`;
      list.replaceChildren();
      return;
    }
    sub.textContent = "Cosine distance of each filter's weights to the previous step (0 = same direction).";
    const order = sortOrder(drift, true).slice(0, SHOWN);
    const top = Math.max(...order.map((f) => drift[f] ?? 0)) || 1;
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
        button.title = `norm change ${formatPercent(data.stats.norm_change_prev?.[f])}`;
        button.append(el("span", "cvz-rank-name", `#${f}`), track, el("span", "cvz-rank-value", formatNumber(drift[f])));
        button.addEventListener("click", () => store.selectFilter(f));
        item.append(button);
        return item;
      }),
    );
  });
}
