// The filter grid: one <canvas> cell per filter (weights or activation maps) with its index under
// it (so a sorted grid still says which filter is which), hover tooltip, click or Enter to select.
// Used by the single-layer view and by both sides of a comparison.

import { itemLayout, paintItem, paintRgb, rgbLayout, scaleOf } from "../raster.js";
import { el } from "./controls.js";

/**
 * @typedef {import("../raster.js").Scale} Scale
 * @typedef {{
 *   values: Float32Array, itemShape: number[], count: number, order: number[],
 *   lut: Uint8ClampedArray, kind: "diverging"|"sequential", norm: "filter"|"layer",
 *   layerScale?: Scale, selected: ?number, strip: boolean, receivedAt?: number,
 *   rgb?: {lo: number[], hi: number[]},
 * }} GridSpec
 *   values: (count, ...itemShape) row-major; itemShape is (channels, ...spatial);
 *   order[k] is the filter drawn in cell k; strip: 1-D data, drawn taller than one row per channel;
 *   rgb: draw 3-channel images in true colour, each channel's lo..hi to 0..255 (feature visualisations).
 */

/** CSS px under each cell for its filter index (clear of the 2 px selection outline). */
const LABEL_HEIGHT = 13;

/** @param {number} count */
function targetCell(count) {
  if (count <= 16) return 64;
  if (count <= 64) return 48;
  if (count <= 256) return 36;
  return 28;
}

export class FilterGrid {
  /**
   * @param {{testid: string, label: string, describe: (filter: number) => Array<[string, string]>,
   *   onSelect: (filter: number) => void, name?: (filter: number) => string,
   *   caption?: (filter: number) => string, onHover?: (cell: number) => void}} options
   *   label: the canvas's accessible name; name: the tooltip title (default "Filter #i");
   *   caption: the text under the cell (default "i");
   *   onHover: the cell under the cursor, -1 for none
   */
  constructor(options) {
    this.options = options;
    this.element = el("div", "cvz-grid");
    this.canvas = document.createElement("canvas");
    this.canvas.dataset.testid = options.testid;
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", options.label);
    this.hoverBox = el("div", "cvz-cell-box cvz-cell-hover");
    this.selectBox = el("div", "cvz-cell-box cvz-cell-selected");
    this.tooltip = el("div", "cvz-tooltip");
    this.tooltip.dataset.testid = `${options.testid}-tooltip`;
    this.tooltip.setAttribute("role", "tooltip");
    this.element.append(this.canvas, this.hoverBox, this.selectBox, this.tooltip);
    /** @type {?GridSpec} */
    this.spec = null;
    this.geometry = { cols: 1, cellW: 1, cellH: 1, pitchX: 1, pitchY: 1 };
    /** Cell index under the mouse or keyboard cursor, -1 for none. */
    this.cursor = -1;
    this.width = 0;

    this.canvas.addEventListener("mousemove", (e) => this.hover(this.cellAt(e.offsetX, e.offsetY), e.offsetX, e.offsetY));
    this.canvas.addEventListener("mouseleave", () => this.hover(-1, 0, 0));
    this.canvas.addEventListener("click", (e) => {
      const cell = this.cellAt(e.offsetX, e.offsetY);
      if (cell >= 0 && this.spec) this.options.onSelect(this.spec.order[cell]);
    });
    this.canvas.addEventListener("keydown", (e) => this.key(e));
    new ResizeObserver(() => {
      const width = this.element.clientWidth;
      if (this.spec && width !== this.width) this.draw(this.spec);
    }).observe(this.element);
  }

  /** @param {GridSpec} spec */
  draw(spec) {
    this.spec = spec;
    this.width = this.element.clientWidth;
    const rgb = spec.rgb ? rgbLayout(spec.itemShape) : null;
    const layout = rgb ?? itemLayout(spec.itemShape);
    const target = targetCell(spec.count);
    // Cells of about target² area whatever the item's aspect, no side over 2.5 × target.
    const zoom = Math.max(
      1,
      Math.min(
        Math.floor(target / Math.sqrt(layout.width * layout.height)),
        Math.floor((2.5 * target) / Math.max(layout.width, layout.height)),
      ),
    );
    const zx = zoom;
    const zy = spec.strip ? Math.max(zoom, Math.floor(target / 2 / layout.height)) : zoom;
    const cellW = layout.width * zx;
    const cellH = layout.height * zy;
    // Channels inside a cell are one zoomed pixel apart; filters must be clearly further apart.
    const gap = Math.max(layout.offsets.includes(-1) ? 2 * zoom + 2 : 0, spec.count > 256 ? 3 : spec.count > 64 ? 5 : 8);
    const pitchX = cellW + gap;
    const pitchY = cellH + LABEL_HEIGHT + gap;
    const cols = Math.max(1, Math.min(spec.count, Math.floor((Math.max(this.width, pitchX) + gap) / pitchX)));
    const rows = Math.ceil(spec.count / cols);
    this.geometry = { cols, cellW, cellH, pitchX, pitchY };

    // Every item at one pixel per value in an atlas, then scaled up cell by cell.
    const atlas = new OffscreenCanvas(cols * layout.width, rows * layout.height);
    const image = new ImageData(atlas.width, atlas.height);
    const size = spec.itemShape.reduce((a, b) => a * b, 1);
    const shared = spec.norm === "layer" ? spec.layerScale ?? scaleOf(spec.values, spec.kind) : null;
    for (let k = 0; k < spec.count; k++) {
      const f = spec.order[k];
      const values = spec.values.subarray(f * size, (f + 1) * size);
      const x0 = (k % cols) * layout.width;
      const y0 = Math.floor(k / cols) * layout.height;
      if (rgb && spec.rgb) paintRgb(image, values, rgb, spec.rgb, x0, y0);
      else paintItem(image, values, layout, shared ?? scaleOf(values, spec.kind), spec.lut, x0, y0);
    }
    atlas.getContext("2d").putImageData(image, 0, 0);

    const dpr = window.devicePixelRatio || 1;
    const cssW = cols * pitchX - gap;
    const cssH = rows * pitchY - gap;
    this.canvas.style.width = `${cssW}px`;
    this.canvas.style.height = `${cssH}px`;
    this.canvas.width = Math.round(cssW * dpr);
    this.canvas.height = Math.round(cssH * dpr);
    const ctx = this.canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    for (let k = 0; k < spec.count; k++) {
      const sx = (k % cols) * layout.width;
      const sy = Math.floor(k / cols) * layout.height;
      ctx.drawImage(atlas, sx, sy, layout.width, layout.height, (k % cols) * pitchX, Math.floor(k / cols) * pitchY, cellW, cellH);
    }
    const style = getComputedStyle(this.element);
    ctx.fillStyle = style.getPropertyValue("--cvz-muted").trim() || "#616161";
    ctx.font = `9px ${style.fontFamily}`;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const caption = this.options.caption ?? String;
    for (let k = 0; k < spec.count; k++) {
      const x = (k % cols) * pitchX + cellW / 2;
      // Squeezed to the pitch rather than spilling onto the neighbour's label.
      ctx.fillText(caption(spec.order[k]), x, Math.floor(k / cols) * pitchY + cellH + 3, pitchX - 1);
    }

    const d = this.canvas.dataset;
    d.filterCount = String(spec.count);
    d.cols = String(cols);
    d.pitchX = String(pitchX);
    d.pitchY = String(pitchY);
    d.cellWidth = String(cellW);
    d.cellHeight = String(cellH);
    d.labelHeight = String(LABEL_HEIGHT);
    d.order = spec.order.join(",");
    if (spec.receivedAt !== undefined) {
      const receivedAt = spec.receivedAt;
      // The frame after this one has been painted: its callback runs after the paint.
      requestAnimationFrame(() => setTimeout(() => (d.paintMs = (performance.now() - receivedAt).toFixed(1))));
    }
    this.placeBox(this.selectBox, spec.selected === null ? -1 : spec.order.indexOf(spec.selected));
    if (this.cursor >= spec.count) this.cursor = -1;
    this.hover(this.cursor, -1, -1);
  }

  /** Outline `cell` as if hovered, without a tooltip: the same filter hovered in another grid. @param {number} cell */
  echo(cell) {
    this.placeBox(this.hoverBox, cell);
  }

  /** @param {number} x @param {number} y @returns {number} cell index or -1 */
  cellAt(x, y) {
    const { cols, cellW, cellH, pitchX, pitchY } = this.geometry;
    const col = Math.floor(x / pitchX);
    const row = Math.floor(y / pitchY);
    if (col < 0 || col >= cols || row < 0 || x - col * pitchX > cellW || y - row * pitchY > cellH + LABEL_HEIGHT) return -1;
    const cell = row * cols + col;
    return this.spec && cell < this.spec.count ? cell : -1;
  }

  /** @param {HTMLElement} box @param {number} cell */
  placeBox(box, cell) {
    if (cell < 0) {
      box.hidden = true;
      return;
    }
    const { cols, cellW, cellH, pitchX, pitchY } = this.geometry;
    box.hidden = false;
    box.style.left = `${this.canvas.offsetLeft + (cell % cols) * pitchX - 2}px`;
    box.style.top = `${this.canvas.offsetTop + Math.floor(cell / cols) * pitchY - 2}px`;
    box.style.width = `${cellW + 4}px`;
    box.style.height = `${cellH + 4}px`;
  }

  /**
   * Show the tooltip for `cell` near (x, y) in canvas coordinates, or beside the cell when x < 0.
   * @param {number} cell @param {number} x @param {number} y
   */
  hover(cell, x, y) {
    this.cursor = cell;
    this.placeBox(this.hoverBox, cell);
    this.options.onHover?.(cell);
    if (cell < 0 || !this.spec) {
      this.tooltip.hidden = true;
      return;
    }
    const { cols, cellW, pitchX, pitchY } = this.geometry;
    const filter = this.spec.order[cell];
    const name = this.options.name ? this.options.name(filter) : `Filter #${filter}`;
    this.tooltip.replaceChildren(el("div", "cvz-tooltip-title", name));
    for (const [label, value] of this.options.describe(filter)) {
      const row = el("div", "cvz-tooltip-row");
      row.append(el("span", "cvz-tooltip-label", label), el("span", "cvz-tooltip-value", value));
      this.tooltip.append(row);
    }
    this.tooltip.hidden = false;
    const px = x >= 0 ? x : (cell % cols) * pitchX + cellW;
    const py = y >= 0 ? y : Math.floor(cell / cols) * pitchY;
    const left = this.canvas.offsetLeft + px + 14;
    const maxLeft = this.element.clientWidth - this.tooltip.offsetWidth - 4;
    this.tooltip.style.left = `${Math.max(0, left > maxLeft ? left - this.tooltip.offsetWidth - 28 : left)}px`;
    this.tooltip.style.top = `${this.canvas.offsetTop + py + 14}px`;
  }

  /** Arrow keys move a cursor over the cells; Enter or Space selects. @param {KeyboardEvent} e */
  key(e) {
    if (!this.spec) return;
    const { cols } = this.geometry;
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols };
    if (e.key in moves) {
      const next = Math.max(0, Math.min(this.spec.count - 1, (this.cursor < 0 ? 0 : this.cursor + moves[e.key])));
      this.hover(next, -1, -1);
      e.preventDefault();
    } else if ((e.key === "Enter" || e.key === " ") && this.cursor >= 0) {
      this.options.onSelect(this.spec.order[this.cursor]);
      e.preventDefault();
    } else if (e.key === "Escape") {
      this.hover(-1, 0, 0);
    }
  }
}
