// Downloads of what is on screen: every table as CSV (the cells as shown), every grid and plot as
// PNG. A canvas is saved as its own pixels under a title, with its colour bar below; anything else
// (an SVG chart, bars, a wall of canvases) is drawn through an SVG <foreignObject> carrying its
// computed styles, without the UI's buttons. A button names its file
// from the nearest [data-export-parts] (run, layer, step: set by the view) and its own part.

import { downloadName, toCsv } from "../csv.js";

/**
 * A table's header and body rows as text, as the screen shows them; a cell holding badges (the
 * Impact table's Flags) gives their texts joined by "; ".
 * @param {HTMLTableElement} table @returns {string[][]}
 */
export function tableRows(table) {
  return [...table.querySelectorAll("tr")].map((row) => [...row.cells].map(cellText));
}

/** A cell as CSV text: its badges joined, else its text. @param {Element} cell */
function cellText(cell) {
  const badges = [...cell.querySelectorAll(".cvz-badge")];
  return badges.length ? badges.map((b) => (b.textContent ?? "").trim()).join("; ") : (cell.textContent ?? "").trim();
}

/**
 * The view's name parts for files of what `node` is in: [run, layer, step…] from the nearest
 * [data-export-parts] (a JSON array), or none.
 * @param {Element} node @returns {string[]}
 */
function exportParts(node) {
  const holder = /** @type {?HTMLElement} */ (node.closest("[data-export-parts]"));
  return holder ? JSON.parse(holder.dataset.exportParts ?? "[]") : [];
}

/**
 * Set the name parts for files saved from inside `node`.
 * @param {HTMLElement} node @param {Array<string|number>} parts
 */
export function setExportParts(node, parts) {
  node.dataset.exportParts = JSON.stringify(parts.map(String));
}

/** @param {Blob} blob @param {string} name */
function save(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

/** The colour behind `node`: its own background or the nearest ancestor's that is not transparent. @param {Element} node */
function backgroundOf(node) {
  for (let n = /** @type {?Element} */ (node); n; n = n.parentElement) {
    const color = getComputedStyle(n).backgroundColor;
    if (color && color !== "transparent" && !/^rgba\(.*,\s*0\)$/.test(color)) return color;
  }
  return "#fff";
}

/** @param {HTMLCanvasElement} canvas @returns {Promise<Blob>} */
function pngOf(canvas) {
  return new Promise((resolve, reject) =>
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the browser made no PNG"))), "image/png"),
  );
}

/** Each element kind's computed style with no stylesheet, by "namespace tag". @type {Map<string, Map<string, string>>} */
const DEFAULTS = new Map();

/**
 * The computed style an element of `node`'s kind has with no page stylesheet, measured once in
 * a blank frame.
 * @param {Element} node @param {() => Document} blank @returns {Map<string, string>}
 */
function defaultStyle(node, blank) {
  const key = `${node.namespaceURI} ${node.localName}`;
  let style = DEFAULTS.get(key);
  if (!style) {
    const doc = blank();
    const probe = doc.createElementNS(node.namespaceURI, node.localName);
    doc.body.append(probe);
    const computed = /** @type {Window} */ (doc.defaultView).getComputedStyle(probe);
    style = new Map(Array.from({ length: computed.length }, (_, i) => [computed[i], computed.getPropertyValue(computed[i])]));
    probe.remove();
    DEFAULTS.set(key, style);
  }
  return style;
}

/**
 * `style` as inline CSS, leaving out what the copy gets anyway: a value that is both the element's
 * default and its parent's (so it comes out right whether the property inherits or not).
 * @param {CSSStyleDeclaration} style @param {?CSSStyleDeclaration} parent null for the copy's root: all of it
 * @param {Map<string, string>} defaults
 */
function inlineStyle(style, parent, defaults) {
  let text = "";
  for (let i = 0; i < style.length; i++) {
    const name = style[i];
    const value = style.getPropertyValue(name);
    if (parent && value === defaults.get(name) && value === parent.getPropertyValue(name)) continue;
    text += `${name}:${value};`;
  }
  return text;
}

/**
 * A copy of `source` that looks the same outside the page: its computed styles inlined (the
 * stylesheet and its variables do not reach an SVG image), ::before and ::after as spans,
 * canvases as images, download buttons left out.
 * @param {Element} source @param {?CSSStyleDeclaration} parent the source parent's computed style
 * @param {() => Document} blank
 * @returns {Element}
 */
function standalone(source, parent, blank) {
  const style = getComputedStyle(source);
  if (source instanceof HTMLCanvasElement) {
    const img = document.createElement("img");
    img.src = source.toDataURL("image/png");
    img.setAttribute("style", inlineStyle(style, parent, defaultStyle(img, blank)));
    return img;
  }
  const copy = /** @type {Element} */ (source.cloneNode(false));
  copy.setAttribute("style", inlineStyle(style, parent, defaultStyle(source, blank)));
  const pseudo = (/** @type {string} */ which) => {
    const p = getComputedStyle(source, which);
    const content = p.getPropertyValue("content");
    if (!content || content === "none" || content === "normal") return null;
    const span = document.createElement("span");
    span.setAttribute("style", inlineStyle(p, style, defaultStyle(span, blank)));
    span.textContent = content.startsWith('"') ? JSON.parse(content) : "";
    return span;
  };
  const before = source instanceof HTMLElement ? pseudo("::before") : null;
  if (before) copy.append(before);
  for (const child of source.childNodes) {
    if (child instanceof Element) {
      if (!child.classList.contains("cvz-download")) copy.append(standalone(child, style, blank));
    } else {
      copy.append(child.cloneNode(false));
    }
  }
  const after = source instanceof HTMLElement ? pseudo("::after") : null;
  if (after) copy.append(after);
  return copy;
}

/**
 * Any element as drawn on screen, at the screen's device-pixel resolution.
 * @param {Element} element @returns {Promise<Blob>}
 */
async function elementPng(element) {
  const rect = element.getBoundingClientRect();
  const [width, height] = [Math.ceil(rect.width), Math.ceil(rect.height)];
  // A blank frame, made when first needed, measures the elements' default styles.
  /** @type {?HTMLIFrameElement} */
  let frame = null;
  const blank = () => {
    if (!frame) {
      frame = document.createElement("iframe");
      frame.setAttribute("aria-hidden", "true");
      frame.style.cssText = "position:absolute;width:0;height:0;border:0;visibility:hidden";
      document.body.append(frame);
    }
    return /** @type {Document} */ (frame.contentDocument);
  };
  let copy;
  try {
    copy = standalone(element, null, blank);
  } finally {
    /** @type {?HTMLIFrameElement} */ (frame)?.remove();
  }
  copy.setAttribute("style", `${copy.getAttribute("style")}margin:0;position:static;`);
  const xhtml = new XMLSerializer().serializeToString(copy);
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
    `<foreignObject x="0" y="0" width="100%" height="100%">${xhtml}</foreignObject></svg>`;
  const image = new Image();
  image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
  await image.decode();
  const dpr = window.devicePixelRatio || 1;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  ctx.fillStyle = backgroundOf(element);
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  return pngOf(canvas);
}

/**
 * A small button that saves a file; a failure shows on the button rather than being lost.
 * @param {string} text @param {string} title @param {string} testid @param {() => Promise<void>} action
 */
function button(text, title, testid, action) {
  const b = document.createElement("button");
  b.className = "cvz-download";
  b.textContent = text;
  b.type = "button";
  b.title = title;
  b.dataset.testid = testid;
  b.addEventListener("click", (e) => {
    e.stopPropagation(); // a button inside a clickable row or heading does only this
    action().then(
      () => b.removeAttribute("data-error"),
      (error) => {
        b.dataset.error = String(error);
        b.title = `${title} — failed: ${error}`;
      },
    );
  });
  return b;
}

/**
 * A button that saves `table` as CSV, its rows as `tableRows` reads them, or the rows `rows()`
 * builds when the table shows only some of them.
 * @param {HTMLTableElement} table @param {string} part what the table is, for the file name
 * @param {() => Array<?Element>} [rows] header and body rows (`tr`), in order
 */
export function csvButton(table, part, rows) {
  return button("CSV", `Download this table as CSV`, "download-csv", async () => {
    const all = rows
      ? rows().flatMap((row) => (row instanceof HTMLTableRowElement ? [[...row.cells].map(cellText)] : []))
      : tableRows(table);
    save(new Blob([toCsv(all)], { type: "text/csv" }), downloadName(["convviz", ...exportParts(table), part], "csv"));
  });
}

/**
 * A button that saves the rows `rows()` gives as CSV: numbers as they are, not as a table shows them.
 * @param {Element} anchor an element of the view (names the file from its export parts)
 * @param {string} part what the rows are, for the file name @param {() => string[][]} rows
 */
export function dataCsvButton(anchor, part, rows) {
  return button("CSV", "Download these numbers as CSV", "download-csv", async () => {
    save(new Blob([toCsv(rows())], { type: "text/csv" }), downloadName(["convviz", ...exportParts(anchor), part], "csv"));
  });
}

/** A PNG blob as a drawable image. @param {Blob} blob @returns {Promise<ImageBitmap>} */
function bitmapOf(blob) {
  return createImageBitmap(blob);
}

/**
 * A canvas (a grid of kernels or maps) as a figure that reads on its own: a title line saying what
 * it is (the view's run, layer, step and the part), the canvas's pixels as drawn, and below them
 * `legend` (the colour bar with its values) as the screen shows it. Returns the PNG and where the
 * canvas's pixels sit in it.
 * @param {HTMLCanvasElement} canvas @param {string} title @param {?Element} legend
 * @returns {Promise<{blob: Blob, x: number, y: number}>}
 */
async function figurePng(canvas, title, legend) {
  const dpr = window.devicePixelRatio || 1;
  const pad = Math.round(8 * dpr);
  const lineHeight = Math.round(18 * dpr);
  const bar = legend ? await bitmapOf(await elementPng(legend)) : null;
  const style = getComputedStyle(canvas);
  const font = `${Math.round(12 * dpr)}px ${style.fontFamily || "sans-serif"}`;
  const measure = /** @type {CanvasRenderingContext2D} */ (document.createElement("canvas").getContext("2d"));
  measure.font = font;
  const width = Math.ceil(Math.max(canvas.width, bar ? bar.width : 0, measure.measureText(title).width) + 2 * pad);
  const [x, y] = [pad, pad + lineHeight];
  const height = y + canvas.height + (bar ? pad + bar.height : 0) + pad;
  const out = document.createElement("canvas");
  out.width = width;
  out.height = height;
  const ctx = /** @type {CanvasRenderingContext2D} */ (out.getContext("2d"));
  ctx.fillStyle = backgroundOf(canvas);
  ctx.fillRect(0, 0, width, height);
  ctx.fillStyle = style.color || "#000";
  ctx.font = font;
  ctx.textBaseline = "top";
  ctx.fillText(title, pad, pad);
  ctx.drawImage(canvas, x, y);
  if (bar) ctx.drawImage(bar, pad, y + canvas.height + pad);
  return { blob: await pngOf(out), x, y };
}

/**
 * A button that saves what `target()` returns (a canvas, or any element) as PNG. A canvas is saved
 * as a figure (`figurePng`: a title from the view's name parts and `part`, and the colour bar
 * `legend()` gives); an element (a chart, bars) as drawn, its own title in it, without the UI's
 * buttons. After a canvas is saved the button's data-figure says where its pixels sit in the PNG.
 * @param {() => Element} target @param {string} part what it shows, for the file name
 * @param {() => ?Element} [legend] the colour bar of a canvas
 */
export function pngButton(target, part, legend) {
  const b = button("PNG", `Download this as a PNG image`, "download-png", async () => {
    const node = target();
    const parts = exportParts(node);
    if (node instanceof HTMLCanvasElement) {
      const figure = await figurePng(node, [...parts, part].join(" · "), legend ? legend() : null);
      b.dataset.figure = JSON.stringify({ x: figure.x, y: figure.y });
      save(figure.blob, downloadName(["convviz", ...parts, part], "png"));
      return;
    }
    save(await elementPng(node), downloadName(["convviz", ...parts, part], "png"));
  });
  return b;
}
