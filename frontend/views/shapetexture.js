// Where in the network shape or texture is used: per layer (model order) the distribution of its
// filters' shape–texture index, one heatmap row per layer over bins from texture (−1) to shape (+1).

import { formatNumber } from "../numeric.js";
import { el } from "./controls.js";

/**
 * @typedef {{layers: string[], edges: number[], histograms: number[][], medians: Array<?number>,
 *   filters: number[]}} ShapeTexture  the /shape_texture answer
 */

/** A section of the Impact view; `update` draws an answer, or hides the section without one. */
export function shapeTextureSection() {
  const box = el("section", "cvz-shape-texture");
  box.dataset.testid = "shape-texture";
  const heading = el("h3", "cvz-section-title", "Shape vs texture, per layer");
  const note = el(
    "p",
    "cvz-note",
    "Share of each layer's filters by shape–texture index: −1 responds only to texture (locally scrambled patches keep it), +1 only to shape (blur keeps it). The current layer is marked.",
  );
  const table = el("table", "cvz-st-table");
  box.append(heading, note, table);
  box.hidden = true;

  /** @param {?ShapeTexture} answer @param {string} current the layer shown in the Impact view */
  const update = (answer, current) => {
    box.hidden = !answer;
    if (!answer) return;
    const bins = answer.edges.length - 1;
    const head = el("tr");
    head.append(el("th", "cvz-st-layer", "layer"));
    const axis = el("th", "cvz-st-axis");
    axis.colSpan = bins;
    axis.append(el("span", "", "← texture −1"), el("span", "", "0"), el("span", "", "+1 shape →"));
    head.append(axis, el("th", "cvz-num", "median"));
    table.replaceChildren(head);
    answer.layers.forEach((layer, i) => {
      const row = el("tr", layer === current ? "cvz-st-current" : "");
      row.dataset.testid = "shape-texture-row";
      row.dataset.layer = layer;
      row.append(el("th", "cvz-st-layer", layer));
      const total = Math.max(1, answer.filters[i]);
      answer.histograms[i].forEach((count, b) => {
        const cell = el("td", "cvz-st-bin");
        // Opacity by the bin's share of the layer's filters: layers of any width compare.
        cell.style.setProperty("--share", String(count / total));
        cell.title = `${count} of ${answer.filters[i]} filters with index in [${formatNumber(answer.edges[b], 1)}, ${formatNumber(answer.edges[b + 1], 1)}]`;
        row.append(cell);
      });
      row.append(el("td", "cvz-num", formatNumber(answer.medians[i], 2)));
      table.append(row);
    });
  };
  return { element: box, update };
}
