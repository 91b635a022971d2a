// The filter grid of one layer at one step: weights (diverging colormap) or activation maps on
// one probe image (viridis), per-filter or per-layer colour scale, in the chosen order.

import { DIVERGING, SEQUENTIAL, cssGradient } from "../colormap.js";
import { scaleOf } from "../raster.js";
import { along, decodeWire } from "../wire.js";
import { columnOrder, formatValue, headerText, inGroupOrder, naturalOrder } from "../columns.js";
import { formatNumber } from "../numeric.js";
import { el, labelledSelect, segmented, viewCard } from "./controls.js";
import { pngButton, setExportParts } from "./download.js";
import { FilterGrid } from "./grid.js";
import { reachedText, visualizationSpec } from "./featurevis.js";
import { layerFacts } from "./toolbar.js";

/**
 * @typedef {import("../store.js").State} State
 * @typedef {import("../columns.js").Column} Column
 */

/** How each natural order reads in the Order select. */
const FIRST_WORDS = { descending: "highest first", ascending: "lowest first", magnitude: "largest change first" };

/**
 * A colour bar and what its ends mean: the shared scale's values, or "each filter's own range".
 * @param {HTMLElement} box @param {"diverging"|"sequential"} kind @param {?import("../raster.js").Scale} scale
 * @param {string} [note] what the shared scale spans
 */
export function drawLegend(box, kind, scale, note = "one scale for the whole layer") {
  const bar = el("span", "cvz-legend-bar");
  bar.style.background = cssGradient(kind === "diverging" ? DIVERGING : SEQUENTIAL);
  const what = kind === "diverging" ? "weight" : "activation";
  if (scale) {
    box.replaceChildren(
      el("span", "cvz-legend-end", formatNumber(scale.lo)),
      bar,
      el("span", "cvz-legend-end", formatNumber(scale.hi)),
      el("span", "cvz-legend-note", `${what}, ${note}`),
    );
  } else {
    const lo = kind === "diverging" ? "−max|w|" : "min";
    const hi = kind === "diverging" ? "+max|w|" : "max";
    box.replaceChildren(
      el("span", "cvz-legend-end", lo),
      bar,
      el("span", "cvz-legend-end", hi),
      el("span", "cvz-legend-note", `${what}, each filter scaled to its own range`),
    );
  }
}

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountLayerView(root, store) {
  const { card, head, title, sub: facts } = viewCard("cvz-card", "layer-view");
  title.dataset.testid = "layer-title";
  const tools = el("div", "cvz-card-tools");
  const imageRow = el("div", "cvz-image-row");
  const legend = el("div", "cvz-legend");
  legend.dataset.testid = "legend";
  const sort = labelledSelect("Order", "sort-picker", (v) => store.setView({ sort: /** @type {State["sort"]} */ (v) }));
  sort.element.classList.add("cvz-inline-field");
  sort.setOptions([{ value: "index", text: "Filter index" }], "index");
  tools.append(legend, imageRow, sort.element);
  const note = el("p", "cvz-note");
  note.dataset.testid = "layer-note";
  const footprint = el("p", "cvz-footprint");
  footprint.dataset.testid = "footprint";

  /** @type {any} */
  let stats = null;
  /** The run's declared columns the layer's statistics hold, in their groups' order. @type {Column[]} */
  let statColumns = [];
  const grid = new FilterGrid({
    testid: "filter-grid",
    label: "Filters of the selected layer",
    describe: (f) =>
      statColumns.map((c) => {
        const v = stats?.[c.name]?.[f] ?? null;
        return /** @type {[string, string]} */ ([c.label, formatValue(c, v, { signed: (v ?? 0) < 0 || c.first === "abs" })]);
      }),
    onSelect: (f) => store.selectFilter(f),
  });
  /** The visualisations on show: their filters and answer, so the grid's cells map to filters. */
  let vis = /** @type {?import("./featurevis.js").FeatureVisAnswer} */ (null);
  const visGrid = new FilterGrid({
    testid: "vis-grid",
    label: "Feature visualisations of the selected layer",
    name: (i) => `Filter #${vis?.filters[i]}`,
    caption: (i) => String(vis?.filters[i] ?? ""),
    describe: (i) => [["Reached", reachedText(vis?.objective[i] ?? null, vis?.probe_best[i] ?? null)],
      ["Probe's best", formatNumber(vis?.probe_best[i] ?? NaN)]],
    onSelect: (i) => vis && store.selectFilter(vis.filters[i]),
  });
  visGrid.element.hidden = true;
  tools.append(pngButton(() => (visGrid.element.hidden ? grid.canvas : visGrid.canvas), "grid", () => legend));
  card.append(head, tools, note, footprint, grid.element, visGrid.element);
  root.append(card);

  /** Decoded arrays of the payload last drawn, so toggles do not decode again. */
  let decoded = { data: /** @type {any} */ (null), tiles: /** @type {any} */ (null), maps: /** @type {any} */ (null) };

  store.subscribe((s, prev) => {
    card.hidden = s.phase !== "ready" || s.mode !== "filters";
    if (card.hidden) return;
    sort.select.value = s.sort;
    const data = s.layerData.data;
    card.dataset.loading = String(s.layerData.status === "loading");
    const entry = store.layerEntry();
    title.textContent = s.layer ? `Layer ${s.layer}` : "";
    facts.textContent = entry ? `${layerFacts(entry.info)} · step ${s.step}` : "";
    if (s.layerData.status === "error") {
      note.textContent = `Could not load this layer: ${s.layerData.error}`;
      note.hidden = false;
      return;
    }
    if (!data || (data.run !== s.run || data.layer !== s.layer)) {
      note.textContent = `Loading layer ${s.layer}…`;
      note.hidden = false;
      return;
    }
    const same =
      decoded.data === data &&
      prev.show === s.show &&
      prev.norm === s.norm &&
      prev.sort === s.sort &&
      prev.image === s.image &&
      prev.filter === s.filter &&
      prev.mode === s.mode &&
      prev.featureVis.layer === s.featureVis.layer;
    if (same) return;
    // Paint time runs from the data's arrival, or for a redraw of the same data, from now.
    const since = decoded.data === data ? performance.now() : data.receivedAt;
    if (decoded.data !== data) decoded = { data, tiles: decodeWire(data.tiles), maps: data.maps ? decodeWire(data.maps) : null };
    stats = data.stats;
    statColumns = inGroupOrder((store.runEntry()?.columns ?? []).filter((c) => stats[c.name] !== undefined));
    sort.setOptions(
      [
        { value: "index", text: "Filter index" },
        ...statColumns.filter((c) => c.format !== "flag").map((c) => ({ value: c.name, text: `${headerText(c)}: ${FIRST_WORDS[naturalOrder(c)]}` })),
      ],
      s.sort,
    );
    const count = data.info.filters;
    fillFootprint(footprint, data.footprint ?? null, data.info.kernel_size);

    const imageValues = (data.map_images ?? []).map(String);
    imageRow.replaceChildren();
    const showVis = s.show === "visualizations";
    grid.element.hidden = showVis;
    visGrid.element.hidden = !showVis;
    sort.element.hidden = showVis; // the visualised filters are shown by index
    if (showVis) {
      footprint.hidden = true;
      drawVisualizations(s.featureVis.layer, s);
      return;
    }
    const showMaps = s.show === "activations";
    if (showMaps && decoded.maps) {
      const picker = segmented(
        "Probe image",
        "image-picker",
        imageValues.map((v, i) => ({ value: String(i), text: `#${v}` })),
        (v) => store.setView({ image: Number(v) }),
      );
      picker.setValue(String(Math.min(s.image, imageValues.length - 1)));
      imageRow.append(picker.element);
    }

    // By index, or by a per-filter stat, its declared end first (as the Impact table sorts it).
    const stat = s.sort === "index" ? null : stats[s.sort] ?? null;
    const column = statColumns.find((c) => c.name === s.sort);
    const order = stat && column
      ? columnOrder(stat.map((/** @type {?number} */ v) => v ?? NaN), column, false)
      : Array.from({ length: count }, (_, i) => i);
    /** @type {import("./grid.js").GridSpec} */
    let spec;
    if (showMaps && decoded.maps) {
      const image = along(decoded.maps, Math.min(s.image, decoded.maps.shape[0] - 1));
      spec = {
        values: image.values,
        itemShape: [1, ...image.shape.slice(1)],
        count,
        order,
        lut: SEQUENTIAL,
        kind: "sequential",
        norm: s.norm,
        selected: s.filter,
        strip: image.shape.length === 2,
        receivedAt: since,
      };
      note.textContent = `Activation maps of probe image #${imageValues[Math.min(s.image, imageValues.length - 1)]}, averaged down to at most 16 per side.`;
      note.hidden = false;
    } else {
      spec = {
        values: decoded.tiles.values,
        itemShape: decoded.tiles.shape.slice(1),
        count,
        order,
        lut: DIVERGING,
        kind: "diverging",
        norm: s.norm,
        selected: s.filter,
        strip: decoded.tiles.shape.length === 3,
        receivedAt: since,
      };
      const meanOfChannels = data.info.in_per_group > 3;
      note.textContent = showMaps
        ? "No activation maps at this step: the run was logged without a probe."
        : meanOfChannels
          ? `Each cell is the filter's mean over its ${data.info.in_per_group} input channels; click a filter for every slice.`
          : "";
      note.hidden = note.textContent === "";
    }
    drawLegend(legend, spec.kind, s.norm === "layer" ? scaleOf(spec.values, spec.kind) : null);
    grid.draw(spec);
    grid.canvas.dataset.step = String(data.step);
    setExportParts(card, [data.run, data.layer, `step${data.step}`, s.show === "activations" && decoded.maps ? "activations" : "weights"]);
    grid.canvas.dataset.layer = data.layer;
  });

  /**
   * The layer's feature visualisations in the grid, in place of its kernels; say what is shown, and
   * when it comes from an earlier step (the default budget visits layers in turns).
   * @param {import("../store.js").KeyedLoad} load @param {State} s
   */
  function drawVisualizations(load, s) {
    legend.replaceChildren(el("span", "cvz-legend-note", "inputs in the model's input space, each channel over the probe's range"));
    if (load.status !== "ready" || !load.data) {
      vis = null;
      visGrid.element.hidden = true;
      note.textContent = load.status === "error"
        ? `No feature visualisations: ${load.error}`
        : "Loading feature visualisations…";
      note.hidden = false;
      return;
    }
    vis = load.data;
    const images = decodeWire(load.data.images);
    const selected = s.filter === null ? -1 : load.data.filters.indexOf(s.filter);
    const spec = visualizationSpec(images, load.data.range, selected < 0 ? null : selected);
    visGrid.draw(spec);
    visGrid.canvas.dataset.step = String(load.data.record_step);
    visGrid.canvas.dataset.filters = load.data.filters.join(",");
    const from = load.data.record_step === s.step ? "" : ` from step ${load.data.record_step}, this layer's last at or before step ${s.step}`;
    note.textContent = `Feature visualisations of ${load.data.filters.length} of ${s.layerData.data?.info.filters} filters${from}: ` +
      "for each filter, the input optimised to drive its mean activation (after its nonlinearity) as high as it goes. " +
      "Hover a cell for the activation it reached beside the probe's best example's.";
    note.hidden = false;
    setExportParts(card, [s.run, s.layer, `step${load.data.record_step}`, "visualizations"]);
  }
}

/**
 * The layer's kernel footprint in one line: the server's plain-words hint (a smaller kernel would
 * do, near-duplicate or dead filters) and the share of kernel energy a centred k×k keeps, per size.
 * @param {HTMLElement} box
 * @param {?{ring_energy: number[], hint: ?string, step: number}} footprint the /layer answer's
 * @param {number[]} kernelSize
 */
function fillFootprint(box, footprint, kernelSize) {
  box.hidden = !footprint || footprint.ring_energy.length < 2;
  if (box.hidden || !footprint) return;
  let kept = 0;
  const last = footprint.ring_energy.length - 1;
  const shares = footprint.ring_energy.map((e, ring) => {
    kept += e;
    const size = kernelSize.map((k) => Math.min(k, 2 * ring + 1)).join("×");
    // Rounded down, so a window never claims more than it keeps; the whole kernel keeps all of it
    // (its shares sum to 0.99999… in float32, which would read "99%").
    return `${size} ${ring === last ? 100 : Math.floor(kept * 100 + 1e-9)}%`;
  });
  const label = el("strong", "", "Kernel footprint: ");
  const parts = [label];
  if (footprint.hint) {
    const hint = el("span", "", `${footprint.hint}. `);
    hint.dataset.testid = "footprint-hint";
    parts.push(hint);
  }
  const energy = el("span", "", `Energy kept by a centred ${shares.join(" · ")}`);
  energy.dataset.testid = "footprint-energy";
  energy.title = `Share of the layer's kernel energy (sum of squared weights) within each centred window, from the kernels of step ${footprint.step}`;
  parts.push(energy);
  box.replaceChildren(...parts);
}
