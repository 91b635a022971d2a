// CSV text (RFC 4180) and download file names: pure, for views/download.js and node's tests.

/**
 * One field: quoted when it holds a comma, a quote or a line break, its quotes doubled.
 * @param {string} text @returns {string}
 */
export function csvField(text) {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/**
 * Rows of cells as CSV, CRLF line ends (what spreadsheets expect), a final line end included.
 * @param {string[][]} rows @returns {string}
 */
export function toCsv(rows) {
  return rows.map((row) => row.map(csvField).join(",")).join("\r\n") + "\r\n";
}

/**
 * A file name from its parts (run, layer, step, what), joined by "_": each part reduced to letters,
 * digits, dots, dashes and underscores, so a run named like markup or a path still makes one safe name.
 * @param {Array<string|number>} parts @param {string} extension without the dot
 * @returns {string}
 */
export function downloadName(parts, extension) {
  const clean = parts
    .map((p) => String(p).replace(/[^\p{L}\p{N}._-]+/gu, "-").replace(/^[-._]+|[-_]+$/g, ""))
    .filter((p) => p !== "");
  return `${clean.join("_") || "convviz"}.${extension}`;
}
