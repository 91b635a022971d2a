// Turns arrays into pixels: how one filter (or one activation map) is laid out as a small
// image, the colour scale it is drawn with, and the drawing itself.

/**
 * Where each pixel of an item's image takes its value from.
 * @typedef {{width: number, height: number, offsets: Int32Array}} ItemLayout
 *   offsets[y * width + x] is an index into the item's values, or -1 for a separator pixel.
 * @typedef {{lo: number, hi: number}} Scale  values map linearly from lo..hi to the colormap
 */

/**
 * Lay out an item shaped (channels, ...spatial):
 * 1-D (C, L): a heat strip, one row per channel;
 * 2-D (C, H, W): channels side by side;
 * 3-D (C, D, H, W): per channel, a row of depth slices; channels stacked.
 * @param {number[]} shape
 * @returns {ItemLayout}
 */
export function itemLayout(shape) {
  const [channels, ...spatial] = shape;
  /** @type {(c: number, y: number, x: number) => [number, number]} */
  let place;
  let width;
  let height;
  if (spatial.length === 1) {
    const [len] = spatial;
    width = len;
    height = channels;
    place = (c, y, x) => [x, c];
  } else if (spatial.length === 2) {
    const [h, w] = spatial;
    width = channels * w + (channels - 1);
    height = h;
    place = (c, y, x) => [c * (w + 1) + x, y];
  } else {
    const [d, h, w] = spatial;
    width = d * w + (d - 1);
    height = channels * h + (channels - 1);
    // y runs over (depth, row): depth slices go left to right.
    place = (c, y, x) => [Math.floor(y / h) * (w + 1) + x, c * (h + 1) + (y % h)];
  }
  const offsets = new Int32Array(width * height).fill(-1);
  const rows = spatial.length === 3 ? spatial[0] * spatial[1] : spatial.length === 2 ? spatial[0] : 1;
  const cols = spatial[spatial.length - 1];
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < rows; y++) {
      for (let x = 0; x < cols; x++) {
        const [px, py] = place(c, y, x);
        offsets[py * width + px] = (c * rows + y) * cols + x;
      }
    }
  }
  return { width, height, offsets };
}

/**
 * Weights: symmetric around 0 so white means 0. Activations: min..max.
 * @param {ArrayLike<number>} values @param {"diverging"|"sequential"} kind @returns {Scale}
 */
export function scaleOf(values, kind) {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!Number.isFinite(lo)) return { lo: -1, hi: 1 };
  if (kind === "diverging") {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return { lo: -m, hi: m };
  }
  return hi > lo ? { lo, hi } : { lo: lo - 1, hi: hi + 1 };
}

/**
 * Paint one item into `image` at (x0, y0), one pixel per value.
 * @param {ImageData} image
 * @param {ArrayLike<number>} values  the item's values
 * @param {ItemLayout} layout
 * @param {Scale} scale
 * @param {Uint8ClampedArray} lut 256-entry RGBA
 * @param {number} x0 @param {number} y0
 */
export function paintItem(image, values, layout, scale, lut, x0, y0) {
  const { data, width: iw } = image;
  const k = 255 / (scale.hi - scale.lo);
  for (let y = 0; y < layout.height; y++) {
    let p = 4 * ((y0 + y) * iw + x0);
    for (let x = 0; x < layout.width; x++, p += 4) {
      const o = layout.offsets[y * layout.width + x];
      if (o < 0) continue; // separator stays transparent
      const v = values[o];
      const t = Number.isFinite(v) ? Math.max(0, Math.min(255, Math.round((v - scale.lo) * k))) : 0;
      data[p] = lut[4 * t];
      data[p + 1] = lut[4 * t + 1];
      data[p + 2] = lut[4 * t + 2];
      data[p + 3] = Number.isFinite(v) ? 255 : 64;
    }
  }
}

/**
 * One item drawn to a canvas at `zoom` CSS pixels per value (crisp, no smoothing).
 * @param {ArrayLike<number>} values @param {number[]} shape (channels, ...spatial)
 * @param {Scale} scale @param {Uint8ClampedArray} lut @param {number} zoom
 * @returns {HTMLCanvasElement}
 */
export function itemCanvas(values, shape, scale, lut, zoom) {
  const layout = itemLayout(shape);
  const image = new ImageData(layout.width, layout.height);
  paintItem(image, values, layout, scale, lut, 0, 0);
  const { canvas, ctx } = hiDpiCanvas(layout.width * zoom, layout.height * zoom);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(bitmap(image), 0, 0, canvas.width, canvas.height);
  return canvas;
}

/**
 * A probe input as an image: RGB when it has 3 channels, else the channel mean in grey;
 * stretched to its own min..max.
 * @param {Float32Array} values (C, H, W) @param {number[]} shape
 * @returns {ImageData}
 */
function probeImage(values, shape) {
  const [channels, h, w] = shape;
  const n = h * w;
  const image = new ImageData(w, h);
  const rgb = channels === 3;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const k = hi > lo ? 255 / (hi - lo) : 0;
  for (let i = 0; i < n; i++) {
    let r;
    let g;
    let b;
    if (rgb) {
      r = values[i];
      g = values[n + i];
      b = values[2 * n + i];
    } else {
      let sum = 0;
      for (let c = 0; c < channels; c++) sum += values[c * n + i];
      r = g = b = sum / channels;
    }
    image.data[4 * i] = (r - lo) * k;
    image.data[4 * i + 1] = (g - lo) * k;
    image.data[4 * i + 2] = (b - lo) * k;
    image.data[4 * i + 3] = 255;
  }
  return image;
}

/**
 * A canvas of `cssWidth` × `cssHeight` CSS pixels backed by device pixels, so it stays sharp on
 * high-DPI screens; callers draw in device pixels or scale the context by `dpr`.
 * @param {number} cssWidth @param {number} cssHeight
 * @returns {{canvas: HTMLCanvasElement, ctx: CanvasRenderingContext2D, dpr: number}}
 */
function hiDpiCanvas(cssWidth, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  const canvas = document.createElement("canvas");
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  return { canvas, ctx: /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d")), dpr };
}

/** @param {ImageData} image */
function bitmap(image) {
  const c = new OffscreenCanvas(image.width, image.height);
  c.getContext("2d").putImageData(image, 0, 0);
  return c;
}

/**
 * A probe image with a filter's activation map laid over it (viridis, `alpha` opaque), or alone
 * when `map` is null. The map is stretched over the whole input: a conv's output covers its input.
 * @param {{values: Float32Array, shape: number[]}} input (C, H, W)
 * @param {?{values: Float32Array, shape: number[]}} map (h, w)
 * @param {Scale} scale @param {Uint8ClampedArray} lut @param {number} alpha 0..1
 * @param {number} cssWidth
 * @returns {HTMLCanvasElement}
 */
export function overlayCanvas(input, map, scale, lut, alpha, cssWidth) {
  const [, h, w] = input.shape;
  const cssHeight = Math.round((cssWidth * h) / w);
  const { canvas, ctx } = hiDpiCanvas(cssWidth, cssHeight);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(bitmap(probeImage(input.values, input.shape)), 0, 0, canvas.width, canvas.height);
  if (!map) return canvas;
  const layout = itemLayout([1, ...map.shape]);
  const heat = new ImageData(layout.width, layout.height);
  paintItem(heat, map.values, layout, scale, lut, 0, 0);
  ctx.globalAlpha = alpha;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(bitmap(heat), 0, 0, canvas.width, canvas.height);
  return canvas;
}

/** CSS px left of a 1-D trace for its activation axis. */
const SIGNAL_AXIS = 34;

/**
 * A 1-D probe input (grey lines, one per channel, each stretched to fit) with a filter's activation
 * over time on top (coloured line on the y axis at the left, and a viridis strip underneath).
 * Either may be empty: (0, 0) and (0,).
 * @param {{values: Float32Array, shape: number[]}} input (C, L)
 * @param {Float32Array} activation (l,)
 * @param {Scale} scale @param {Uint8ClampedArray} lut
 * @param {number} cssWidth @param {number} cssHeight
 * @param {{input: string, activation: string, axis: string, font: string}} colors and the axis font
 * @param {(v: number) => string} format the axis numbers
 * @returns {HTMLCanvasElement}
 */
export function signalCanvas(input, activation, scale, lut, cssWidth, cssHeight, colors, format) {
  const { canvas, ctx, dpr } = hiDpiCanvas(cssWidth, cssHeight);
  ctx.scale(dpr, dpr);
  const strip = 10;
  const plotH = cssHeight - strip - 4;
  const left = activation.length ? SIGNAL_AXIS : 0;
  const plotW = cssWidth - left;
  /** @param {ArrayLike<number>} ys @param {number} lo @param {number} hi */
  const line = (ys, lo, hi) => {
    ctx.beginPath();
    for (let i = 0; i < ys.length; i++) {
      const x = left + (ys.length === 1 ? plotW / 2 : (i / (ys.length - 1)) * plotW);
      const y = 2 + (1 - (ys[i] - lo) / (hi - lo || 1)) * (plotH - 4);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    }
    ctx.stroke();
  };
  const [channels, len] = input.shape;
  const inScale = scaleOf(input.values, "sequential");
  ctx.strokeStyle = colors.input;
  ctx.lineWidth = 1;
  for (let c = 0; c < channels; c++) line(input.values.subarray(c * len, (c + 1) * len), inScale.lo, inScale.hi);
  if (activation.length === 0) return canvas;
  ctx.strokeStyle = colors.activation;
  ctx.lineWidth = 2;
  line(activation, scale.lo, scale.hi);
  // The activation's axis: a rule with its top and bottom values.
  ctx.strokeStyle = colors.axis;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(left - 2.5, 2);
  ctx.lineTo(left - 2.5, plotH - 2);
  ctx.stroke();
  ctx.fillStyle = colors.axis;
  ctx.font = colors.font;
  ctx.textAlign = "right";
  ctx.textBaseline = "top";
  ctx.fillText(format(scale.hi), left - 5, 1, left - 6);
  ctx.textBaseline = "bottom";
  ctx.fillText(format(scale.lo), left - 5, plotH, left - 6);
  const layout = itemLayout([1, activation.length]);
  const heat = new ImageData(layout.width, 1);
  paintItem(heat, activation, layout, scale, lut, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(bitmap(heat), left, cssHeight - strip, plotW, strip);
  return canvas;
}

/**
 * A feature visualisation (C, ...spatial) drawn as a picture: true colour when it has 3 channels
 * and is an image or a clip (a clip's frames side by side); null for anything else, which is drawn
 * per channel by `itemLayout` in grey.
 * @param {number[]} shape
 * @returns {?(ItemLayout & {stride: number})} offsets index one channel's values; stride: between channels
 */
export function rgbLayout(shape) {
  const [channels, ...spatial] = shape;
  if (channels !== 3 || spatial.length < 2) return null;
  const [d, h, w] = spatial.length === 3 ? spatial : [1, ...spatial];
  const width = d * w + (d - 1);
  const offsets = new Int32Array(width * h).fill(-1);
  for (let f = 0; f < d; f++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) offsets[y * width + f * (w + 1) + x] = (f * h + y) * w + x;
    }
  }
  return { width, height: h, offsets, stride: d * h * w };
}

/**
 * Paint one true-colour item into `image` at (x0, y0): channel c maps lo[c]..hi[c] to 0..255 (the
 * probe's range, so colours read as the model's inputs do).
 * @param {ImageData} image @param {ArrayLike<number>} values (3, ...spatial)
 * @param {ItemLayout & {stride: number}} layout @param {{lo: number[], hi: number[]}} range
 * @param {number} x0 @param {number} y0
 */
export function paintRgb(image, values, layout, range, x0, y0) {
  const { data, width: iw } = image;
  const k = [0, 1, 2].map((c) => 255 / ((range.hi[c] - range.lo[c]) || 1));
  for (let y = 0; y < layout.height; y++) {
    let p = 4 * ((y0 + y) * iw + x0);
    for (let x = 0; x < layout.width; x++, p += 4) {
      const o = layout.offsets[y * layout.width + x];
      if (o < 0) continue;
      for (let c = 0; c < 3; c++) data[p + c] = (values[o + c * layout.stride] - range.lo[c]) * k[c];
      data[p + 3] = 255;
    }
  }
}
