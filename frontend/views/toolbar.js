// The toolbar: run and layer pickers, which view (filters / epoch vs epoch / run vs run / impact /
// similarity / filter map), and what the grids draw (weights or activations) on which colour scale.
// The grid's order is picked on the grid's own card (views/layer.js), which keeps this bar one row at 1400 px.

import { el, labelledSelect, segmented } from "./controls.js";
import { hasFeatureVis } from "../recordkeys.js";

/** @typedef {import("../store.js").Store} Store */

/** @param {import("../store.js").LayerInfo} info */
export function layerFacts(info) {
  const parts = [
    info.kind,
    `${info.filters} filters`,
    `kernel ${info.kernel_size.join("×")}`,
    `${info.in_per_group} input channel${info.in_per_group === 1 ? "" : "s"}${info.groups > 1 ? ` per group (${info.groups} groups)` : ""}`,
  ];
  if (info.batchnorm) parts.push(`BatchNorm ${info.batchnorm} follows`);
  return parts.join(" · ");
}

/** @param {HTMLElement} root @param {Store} store */
export function mountToolbar(root, store) {
  const bar = el("div", "cvz-toolbar");
  bar.dataset.testid = "toolbar";
  const run = labelledSelect("Run", "run-picker", (v) => store.selectRun(v));
  const layer = labelledSelect("Layer", "layer-picker", (v) => store.selectLayer(v));
  const mode = segmented(
    "View",
    "mode-picker",
    [
      { value: "findings", text: "Findings" },
      { value: "filters", text: "Filters" },
      { value: "epochs", text: "Epoch vs epoch" },
      { value: "runs", text: "Run vs run" },
      { value: "impact", text: "Impact" },
      { value: "similarity", text: "Similarity" },
      { value: "embedding", text: "Filter map" },
    ],
    (v) => store.setMode(/** @type {import("../store.js").Mode} */ (v)),
  );
  const show = segmented(
    "Show",
    "show-picker",
    [
      { value: "weights", text: "Weights" },
      { value: "activations", text: "Activations" },
      { value: "visualizations", text: "Visualizations" },
    ],
    (v) => store.setView({ show: /** @type {"weights"|"activations"|"visualizations"} */ (v) }),
  );
  const norm = segmented(
    "Color scale",
    "norm-picker",
    [
      { value: "filter", text: "Per filter" },
      { value: "layer", text: "Per layer" },
    ],
    (v) => store.setView({ norm: /** @type {"filter"|"layer"} */ (v) }),
  );
  bar.append(run.element, layer.element, mode.element, show.element, norm.element);
  root.append(bar);

  store.subscribe((s) => {
    bar.hidden = s.phase !== "ready";
    if (bar.hidden) return;
    run.setOptions(
      s.runs.map((r) => ({ value: r.run, text: r.run })),
      s.run,
    );
    const layers = store.runEntry()?.layers ?? [];
    layer.setOptions(
      layers.map((l) => ({ value: l.name, text: `${l.name} — ${l.info.kind} ${l.info.filters}` })),
      s.layer,
    );
    const others = store.comparableRuns().filter((r) => r.run !== s.run);
    mode.setValue(s.mode, others.length ? {} : { runs: "No other run logs this layer with the same shape" });
    const hasMaps = store.layerEntry()?.kinds.includes("maps");
    /** @type {Record<string, string>} */
    const off = {};
    if (!hasMaps) off.activations = "This run was logged without a probe: no activations";
    if (!hasFeatureVis(s.names, store.layerEntry() ?? null)) {
      off.visualizations = "This layer has no feature visualisations: log with ConvViz(..., feature_vis=True)";
    }
    show.setValue(s.show, off);
    norm.setValue(s.norm);
    norm.element.hidden = s.mode === "impact" || s.mode === "similarity" || s.mode === "embedding" ||
      (s.mode === "filters" && s.show === "visualizations"); // visualisations are drawn in the probe's range
    show.element.hidden = s.mode !== "filters";
  });
}
