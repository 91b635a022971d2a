// The view state (run, layer, view, step, filter, run B, step B, pairing step) in the page's
// address, so a reload shows the same thing and a copied link shows it to a colleague. TensorBoard
// shows the tab in an iframe: the state goes into TensorBoard's own page's hash after the plugin
// name it routes by (`#convviz&cvz.run=…&cvz.step=…`), as its own dashboards keep theirs there.
// The parsing and formatting are pure (tests/js/); only `keepViewStateInUrl` touches a window.

const PREFIX = "cvz.";

/**
 * @typedef {{run?: string, layer?: string, view?: string, step?: number, filter?: number,
 *   runB?: string, stepA?: number, stepB?: number, pairStep?: number, sort?: string}} ViewState
 *   view: the store's mode; stepA: epoch vs epoch's other step; pairStep: run vs run's pairing step;
 *   sort: the column the Impact table (or the Filters grid) is sorted by
 */

/** @type {Array<keyof ViewState>} */
const TEXT_KEYS = ["run", "layer", "view", "runB", "sort"];
/** @type {Array<keyof ViewState>} */
const NUMBER_KEYS = ["step", "filter", "stepA", "stepB", "pairStep"];

/**
 * Our keys from a hash such as "#convviz&cvz.run=a&cvz.step=3"; others are ignored, and a
 * number that does not parse is left out.
 * @param {string} hash @returns {ViewState}
 */
export function readViewState(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, "").split("&").slice(1).join("&"));
  /** @type {Record<string, string|number>} */
  const out = {};
  for (const key of TEXT_KEYS) {
    const v = params.get(PREFIX + key);
    if (v !== null && v !== "") out[key] = v;
  }
  for (const key of NUMBER_KEYS) {
    const v = params.get(PREFIX + key);
    if (v !== null && /^-?\d+$/.test(v)) out[key] = Number(v);
  }
  return /** @type {ViewState} */ (out);
}

/**
 * `hash` with our keys replaced by `state`'s (undefined ones dropped), its first part (the plugin
 * name) and anyone else's keys kept as they were.
 * @param {string} hash @param {ViewState} state @returns {string}
 */
export function withViewState(hash, state) {
  const [head, ...rest] = hash.replace(/^#/, "").split("&");
  const others = rest.filter((part) => part && !part.startsWith(PREFIX));
  const ours = [...TEXT_KEYS, ...NUMBER_KEYS]
    .filter((key) => state[key] !== undefined && state[key] !== null && state[key] !== "")
    .map((key) => `${PREFIX}${key}=${encodeURIComponent(String(state[key]))}`);
  return `#${[head, ...others, ...ours].join("&")}`;
}

/**
 * What the address should say for the store's state: only what the current view uses.
 * @param {import("./store.js").State} s @returns {ViewState}
 */
export function viewStateOf(s) {
  /** @type {ViewState} */
  const out = { run: s.run, layer: s.layer, view: s.mode, step: s.step };
  if (s.filter !== null) out.filter = s.filter;
  if (s.mode === "epochs") out.stepA = s.compare.stepA;
  if (s.mode === "impact" && s.impactSort.metric) out.sort = s.impactSort.metric;
  if (s.mode === "filters" && s.sort !== "index") out.sort = s.sort;
  if (s.mode === "runs") {
    Object.assign(out, { runB: s.compare.runB, stepB: s.compare.stepB });
    if (s.compare.pairStep >= 0) out.pairStep = s.compare.pairStep;
  }
  return out;
}

/** The window whose address the user sees: TensorBoard's page around the tab when it is reachable. */
function addressWindow() {
  try {
    return window.parent.location.href ? window.parent : window;
  } catch {
    return window; // another origin: keep the state in the tab's own address
  }
}

/** The state the address asks for when the tab opens. @returns {ViewState} */
export function wantedViewState() {
  return readViewState(addressWindow().location.hash);
}

/**
 * Keep the address in step with the store once it is ready (replacing, not adding, history
 * entries: moving the slider should not fill the back button).
 * @param {import("./store.js").Store} store
 */
export function keepViewStateInUrl(store) {
  store.subscribe((s) => {
    if (s.phase !== "ready" || !s.run) return;
    const target = addressWindow();
    const hash = withViewState(target.location.hash || "#convviz", viewStateOf(s));
    if (hash !== target.location.hash) target.history.replaceState(target.history.state, "", hash);
  });
}
