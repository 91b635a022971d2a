// The one store: every piece of dashboard state, and the actions that change it (loading
// data through api.js on the way). Views read `store.state`, call actions and subscribe.

import * as api from "./api.js";
import { hasFeatureVis } from "./recordkeys.js";

/**
 * @typedef {{name: string, info: LayerInfo, steps: number[], kernel_steps: number[], kinds: string[]}} LayerEntry
 * @typedef {{kind: string, dims: number, filters: number, in_per_group: number, kernel_size: number[],
 *   groups: number, stride: number[], transposed: boolean, has_bias: boolean, batchnorm: ?string}} LayerInfo
 * @typedef {{run: string, layers: LayerEntry[], probe: ?{n: number, shape: number[], has_labels: boolean},
 *   columns?: import("./columns.js").Column[], writer?: ?string, shape_texture?: boolean}} RunEntry  columns: the
 *   per-filter columns the run has; writer: the tb_convviz version that wrote it (null: before logs named it);
 *   shape_texture: whether it logged shape–texture responses
 * @typedef {{run: string, tag: string, step: ?number, reason: string}} Problem  a record that could not be read
 *   (step null: every step of its tag)
 * @typedef {{status: "idle"|"off"|"loading"|"ready"|"error", data: any, error: string, code?: number}} Load
 *   off: the run did not log this (an analysis left out of ConvViz(...)); code: the HTTP status of an error
 * @typedef {"perturbation"|"impact"|"table"} Analysis
 * @typedef {"findings"|"filters"|"epochs"|"runs"|"impact"|"similarity"|"embedding"} Mode
 * @typedef {Load & {key?: string}} KeyedLoad  key: what was asked, so a repeated ask is not fetched again
 * @typedef {{
 *   phase: "loading"|"empty"|"error"|"ready", message: string,
 *   runs: RunEntry[], run: string, layer: string, step: number,
 *   mode: Mode, show: "weights"|"activations"|"visualizations", norm: "filter"|"layer",
 *   sort: string, driftSince: "first"|"previous",
 *   image: number,
 *   layerData: Load, filter: ?number, detail: Load, probes: Record<string, Load>, overlay: number,
 *   compare: {stepA: number, runB: string, stepB: number, align: "index"|"match"|"aligned",
 *     pairStep: number, sort: "cosine_distance"|"norm_change"|"act_mean_change", load: Load},
 *   analysis: Record<Analysis, Load>, impactSort: {metric: string, reverse: boolean}, historyColumn: string,
 *   hiddenGroups: string[],
 *   similarity: {runB: string, stepB: number, layers: KeyedLoad, epochs: KeyedLoad, final: KeyedLoad},
 *   embedding: {method: "pca"|"umap"|"tsne", color: string, trails: boolean, load: KeyedLoad},
 *   embeddingMethods: string[],
 *   names: import("./recordkeys.js").RecordNames, shapeTexture: KeyedLoad, problems: Problem[],
 *   cost: KeyedLoad, findings: KeyedLoad,
 *   featureVis: {layer: KeyedLoad, history: KeyedLoad, runA: KeyedLoad, runB: KeyedLoad},
 *   version: string, formatVersion: number, newerLogs: import("./versions.js").NewerLog[],
 * }} State
 *   analysis: the current layer's perturbation responses, impact record and table of every per-filter
 *   column (/table) at the slider's step, for the Impact view, the filter map and the filter detail;
 *   sort: the grid's order, "index" or a per-filter statistic's column name; driftSince: the drift ranking's baseline step; impactSort: the Impact table's column (a column
 *   name; "" for the table's default) and whether its natural order is reversed; historyColumn: the
 *   column whose history the filter detail charts ("" for the default); hiddenGroups: the column
 *   groups the Impact table leaves out (its CSV holds every column).
 *   similarity: the CKA views' answers; B is the current run at the slider's step while runB is ""
 *   and stepB -1. embedding: the filter map's answer, its method and the column it is coloured by
 *   ("" for the first), and whether trails are drawn; embeddingMethods: the methods the server can
 *   compute (/index). compare.pairStep: the step run vs run pairs filters at (-1: the server's
 *   default, the last step both runs have profiles for). problems: records of the logdir that could not be read (the index answer's).
 *   names: the record names of the index answer (how to read perturbation and impact arrays).
 *   shapeTexture: the run's per-layer shape–texture distribution at the slider's step (Impact view).
 *   cost: what each of the current run's logs cost (/cost, keyed by run): the cost line reads the
 *   slider's step from it. findings: the current run's findings at the slider's step (/findings).
 *   featureVis: feature visualisations (/feature_vis): the layer's at the slider's step (the grid's
 *   "Visualizations"), the selected filter's over every step (the detail's filmstrip), and in run vs
 *   run each side's at its step.
 *   version, formatVersion: the serving tb_convviz and the log format it reads ("" and 0 before the
 *   index answered); newerLogs: runs holding records of a newer format, left out (the index answer's).
 */

/** Layer answers kept for the slider: a 512-filter layer's answer is about 1 MB. */
const LAYER_CACHE_SIZE = 24;
/** Analysis answers (perturbation and impact, a few hundred KB for 512 filters) kept for the slider. */
const ANALYSIS_CACHE_SIZE = 24;
/** @type {Analysis[]} */
const ANALYSES = ["perturbation", "impact", "table"];

/**
 * How each analysis is fetched: the record routes as they answer, the table with its values decoded.
 * @type {Record<Analysis, (run: string, layer: string, step: number) => Promise<any>>}
 */
const FETCH = {
  perturbation: (run, layer, step) => api.fetchAnalysis("perturbation", run, layer, step),
  impact: (run, layer, step) => api.fetchAnalysis("impact", run, layer, step),
  table: api.fetchTable,
};

/** @type {Load} */
const IDLE = Object.freeze({ status: "idle", data: null, error: "" });

/** @param {any} data @returns {Load} */
const ready = (data) => ({ status: "ready", data, error: "" });
/** @param {unknown} e @returns {Load} */
const failed = (e) => ({
  status: "error",
  data: null,
  error: e instanceof Error ? e.message : String(e),
  code: e instanceof api.ApiError ? e.status : 0,
});
/** @type {Load} */
const LOADING = Object.freeze({ status: "loading", data: null, error: "" });
/** @type {Load} */
const OFF = Object.freeze({ status: "off", data: null, error: "" });

export class Store {
  constructor() {
    /** @type {State} */
    this.state = {
      phase: "loading",
      message: "Loading convviz runs…",
      runs: [],
      run: "",
      layer: "",
      step: -1, // none yet: the first layer opens at its last step
      mode: "findings", // what a run opens on: what to look at, each with a link to its evidence
      show: "weights",
      norm: "filter",
      sort: "index",
      driftSince: "first",
      image: 0,
      layerData: IDLE,
      filter: null,
      detail: IDLE,
      probes: {},
      overlay: 0.6,
      compare: { stepA: 0, runB: "", stepB: 0, align: "match", pairStep: -1, sort: "cosine_distance", load: IDLE },
      analysis: { perturbation: IDLE, impact: IDLE, table: IDLE },
      impactSort: { metric: "", reverse: false },
      historyColumn: "",
      hiddenGroups: [],
      similarity: { runB: "", stepB: -1, layers: IDLE, epochs: IDLE, final: IDLE },
      embedding: { method: "pca", color: "", trails: false, load: IDLE },
      embeddingMethods: ["pca"],
      names: { kinds: [], perturbation_groups: {}, counterfactual_prefix: "", top_example_prefix: "", impact_exact: "" },
      shapeTexture: IDLE,
      problems: [],
      cost: IDLE,
      featureVis: { layer: IDLE, history: IDLE, runA: IDLE, runB: IDLE },
      findings: IDLE,
      version: "",
      formatVersion: 0,
      newerLogs: [],
    };
    /** @type {Set<(s: State, prev: State) => void>} */
    this.listeners = new Set();
    /** Recent /layer answers by "run\0layer\0step", so scrubbing back over the slider is instant. */
    this.layerCache = new Map();
    /**
     * Recent /perturbation and /impact answers by "kind\0run\0layer\0step": the fetch (so concurrent
     * asks share it) and, once it succeeded, its data.
     * @type {Map<string, {answer: Promise<any>, data: any}>}
     */
    this.analysisCache = new Map();
  }

  /** @param {(s: State, prev: State) => void} fn */
  subscribe(fn) {
    this.listeners.add(fn);
    fn(this.state, this.state);
  }

  /** @param {Partial<State>} patch */
  set(patch) {
    const prev = this.state;
    this.state = { ...prev, ...patch };
    for (const fn of this.listeners) fn(this.state, prev);
  }

  // -- lookups -------------------------------------------------------------------------------

  /** @param {string} [run] @returns {RunEntry|undefined} */
  runEntry(run = this.state.run) {
    return this.state.runs.find((r) => r.run === run);
  }

  /** @param {string} [run] @param {string} [layer] @returns {LayerEntry|undefined} */
  layerEntry(run = this.state.run, layer = this.state.layer) {
    return this.runEntry(run)?.layers.find((l) => l.name === layer);
  }

  /**
   * The runs Run B can be: those whose layer is comparable, the current run left out unless it is
   * the only one (run vs itself is what epoch vs epoch shows).
   */
  runBChoices() {
    const others = this.comparableRuns().filter((r) => r.run !== this.state.run);
    return others.length ? others : this.comparableRuns();
  }

  /** Runs whose `layer` has the same filters and kernel size as in the current run: comparable. */
  comparableRuns() {
    const here = this.layerEntry();
    if (!here) return [];
    return this.state.runs.filter((r) => {
      const other = r.layers.find((l) => l.name === here.name);
      return (
        other &&
        other.info.filters === here.info.filters &&
        other.info.kernel_size.join("x") === here.info.kernel_size.join("x")
      );
    });
  }

  // -- actions -------------------------------------------------------------------------------

  /**
   * Load the run index, then `wanted`'s view (a reloaded or shared address: urlstate.js) as far as
   * the logs hold it, else the first run's first layer at its last step.
   * @param {import("./urlstate.js").ViewState} [wanted]
   */
  async load(wanted = {}) {
    this.set({ phase: "loading", message: "Loading convviz runs…" });
    let index;
    try {
      index = await api.fetchIndex();
    } catch (e) {
      this.set({ phase: "error", message: `Could not load convviz runs: ${failed(e).error}` });
      return;
    }
    const runs = /** @type {RunEntry[]} */ (index.runs).filter((r) => r.layers.length > 0);
    const versions = { version: index.version ?? "", formatVersion: index.format_version, newerLogs: index.newer_logs ?? [] };
    if (runs.length === 0) {
      this.set({
        phase: "empty",
        runs: [],
        problems: index.problems ?? [],
        ...versions,
        message: versions.newerLogs.length
          ? "No convviz data this tb_convviz can read (see the notice above)."
          : "No convviz data in this logdir: add ConvViz(...) to your training loop.",
      });
      return;
    }
    const asked = wanted.run && runs.some((r) => r.run === wanted.run) ? wanted.run : this.state.run;
    const keep = asked && runs.some((r) => r.run === asked) ? asked : runs[0].run;
    // Costs are asked for again: a run still training has logged more steps since.
    this.set({ phase: "ready", message: "", runs, names: index.names, problems: index.problems ?? [], cost: IDLE, ...versions,
      embeddingMethods: index.embedding_methods ?? ["pca"],
      // selectRun keeps a layer and step the run has: the ones asked for, when it has them.
      ...(wanted.layer ? { layer: wanted.layer } : {}), ...(wanted.step !== undefined ? { step: wanted.step } : {}) });
    this.selectRun(keep);
    this.restoreView(wanted);
  }

  /**
   * The rest of a wanted view once its run, layer and step are chosen: the view, its other steps
   * and run, and the open filter; what the logs do not hold is left at its default.
   * @param {import("./urlstate.js").ViewState} wanted
   */
  restoreView(wanted) {
    const modes = ["findings", "filters", "epochs", "runs", "impact", "similarity", "embedding"];
    if (wanted.view && modes.includes(wanted.view) && wanted.view !== this.state.mode) {
      this.setMode(/** @type {Mode} */ (wanted.view));
    }
    const steps = this.layerEntry()?.steps ?? [];
    if (this.state.mode === "epochs" && wanted.stepA !== undefined && steps.includes(wanted.stepA)) this.setCompare({ stepA: wanted.stepA });
    if (this.state.mode === "runs" && wanted.runB && this.runBChoices().some((r) => r.run === wanted.runB)) {
      const stepsB = this.layerEntry(wanted.runB)?.steps ?? [];
      this.setCompare({
        runB: wanted.runB,
        ...(wanted.stepB !== undefined && stepsB.includes(wanted.stepB) ? { stepB: wanted.stepB } : {}),
        ...(wanted.pairStep !== undefined && wanted.pairStep >= 0 ? { pairStep: wanted.pairStep } : {}),
      });
    }
    if (wanted.sort) {
      if (this.state.mode === "impact") this.setImpactSort(wanted.sort, false);
      if (this.state.mode === "filters") this.setView({ sort: wanted.sort });
    }
    const filters = this.layerEntry()?.info.filters ?? 0;
    if (wanted.filter !== undefined && wanted.filter >= 0 && wanted.filter < filters) this.selectFilter(wanted.filter);
    if (this.state.mode === "findings") this.loadFindings();
  }

  /**
   * Open what a finding points at (its `view`: the tab's view, layer, step, sort column, filter),
   * as a shared address would.
   * @param {import("./urlstate.js").ViewState} target
   */
  openView(target) {
    if (target.layer && target.layer !== this.state.layer) {
      if (target.step !== undefined) this.set({ step: target.step });
      this.selectLayer(target.layer);
    } else if (target.step !== undefined && target.step !== this.state.step) {
      const steps = this.layerEntry()?.steps ?? [];
      if (steps.includes(target.step)) this.selectStep(target.step);
    }
    this.selectFilter(null);
    this.restoreView(target);
  }

  /** The current run's findings at the slider's step, fetched once per run and step. */
  loadFindings() {
    const { run, step } = this.state;
    if (!run || step < 0) return;
    const key = JSON.stringify([run, step]);
    if (this.state.findings.key === key && this.state.findings.status !== "error") return;
    this.set({ findings: { ...this.state.findings, status: "loading", key } });
    api.fetchFindings(run, step).then(ready, failed).then((load) => {
      if (this.state.findings.key === key) this.set({ findings: { ...load, key } });
    });
  }

  /** @param {string} run */
  selectRun(run) {
    const entry = this.runEntry(run);
    if (!entry) return;
    const layer = entry.layers.some((l) => l.name === this.state.layer) ? this.state.layer : entry.layers[0].name;
    this.set({ run });
    this.loadCost();
    this.selectLayer(layer);
  }

  /**
   * What each of the current run's logs cost, fetched once per run (and again on load()); a run
   * logged before costs were kept answers null costs, which the cost line leaves unsaid.
   */
  loadCost() {
    const { run } = this.state;
    const key = JSON.stringify([run]);
    if (this.state.cost.key === key && this.state.cost.status !== "error") return;
    this.set({ cost: { ...this.state.cost, status: "loading", key } });
    api.fetchCost(run).then(ready, failed).then((load) => {
      if (this.state.cost.key === key) this.set({ cost: { ...load, key } });
    });
  }

  /** @param {string} layer */
  selectLayer(layer) {
    const entry = this.layerEntry(this.state.run, layer);
    if (!entry) return;
    const step = entry.steps.includes(this.state.step) ? this.state.step : entry.steps[entry.steps.length - 1];
    this.set({ layer, filter: null, detail: IDLE });
    this.resetCompare();
    this.selectStep(step);
  }

  /** @param {number} step */
  async selectStep(step) {
    const { run, layer } = this.state;
    const key = [run, layer, step].join("\0");
    const cached = this.layerCache.get(key);
    const layerData = cached ? ready({ ...cached, receivedAt: performance.now() }) : { ...this.state.layerData, status: "loading" };
    this.set({ step, layerData });
    if (this.state.mode === "impact" || this.state.mode === "embedding") this.loadAnalysis();
    if (this.state.mode === "similarity") this.loadSimilarity();
    if (this.state.mode === "embedding") this.loadEmbedding();
    this.loadFeatureVis();
    if (this.state.mode === "findings") this.loadFindings();
    if (!cached) {
      const load = await api.fetchLayer(run, layer, step).then(ready, failed);
      if (this.state.run !== run || this.state.layer !== layer || this.state.step !== step) return; // stale
      if (load.status === "ready") this.cacheLayer(key, load.data);
      this.set({ layerData: load });
      if (load.status !== "ready") return;
    }
    this.prefetchNeighbours(run, layer, step);
    if (this.state.filter !== null) this.loadDetail();
    if (this.comparing()) this.loadCompare();
  }

  /** Whether the side-by-side view is shown (epoch vs epoch or run vs run). */
  comparing() {
    return this.state.mode === "epochs" || this.state.mode === "runs";
  }

  /**
   * Fetch the steps either side of `step` into the cache, so the next slider move paints at once.
   * @param {string} run @param {string} layer @param {number} step
   */
  prefetchNeighbours(run, layer, step) {
    const steps = this.layerEntry(run, layer)?.steps ?? [];
    const i = steps.indexOf(step);
    for (const next of [steps[i + 1], steps[i - 1]]) {
      const key = [run, layer, next].join("\0");
      if (next === undefined || this.layerCache.has(key)) continue;
      // A failure is left for the step's own fetch to report, if the user ever moves there.
      api.fetchLayer(run, layer, next).then((data) => this.cacheLayer(key, data), () => {});
    }
    if (this.state.mode !== "impact" && this.state.filter === null) return;
    const kinds = this.layerEntry(run, layer)?.kinds ?? [];
    for (const next of [steps[i + 1], steps[i - 1]]) {
      for (const kind of ANALYSES) {
        if (next !== undefined && kinds.includes(kind)) this.analysisFor(kind, run, layer, next);
      }
    }
  }

  /** @param {string} key @param {any} data */
  cacheLayer(key, data) {
    this.layerCache.set(key, data);
    if (this.layerCache.size > LAYER_CACHE_SIZE) this.layerCache.delete(this.layerCache.keys().next().value);
  }

  /** @param {Partial<Pick<State, "show"|"norm"|"sort"|"driftSince"|"image"|"overlay">>} patch */
  setView(patch) {
    this.set(patch);
    if (patch.show) this.loadFeatureVis();
  }

  /** @param {Mode} mode */
  setMode(mode) {
    this.set({ mode });
    if (mode === "epochs") {
      // Two different steps: A the first, B the slider's step (or the last, if the slider is at the first).
      const steps = this.layerEntry()?.steps ?? [];
      if (steps.length > 1 && this.state.step === steps[0]) {
        this.set({ compare: { ...this.state.compare, stepA: steps[0] } });
        this.selectStep(steps[steps.length - 1]);
        return;
      }
      if (this.state.compare.stepA >= this.state.step) this.set({ compare: { ...this.state.compare, stepA: steps[0] } });
    }
    if (mode === "runs" && !this.runBChoices().some((r) => r.run === this.state.compare.runB)) this.resetCompare();
    if (this.comparing()) this.loadCompare();
    if (mode === "impact" || mode === "embedding") this.loadAnalysis();
    if (mode === "similarity") this.loadSimilarity();
    if (mode === "embedding") this.loadEmbedding();
    this.loadFeatureVis();
    if (mode === "findings") this.loadFindings();
  }

  /** @param {?number} filter */
  selectFilter(filter) {
    this.set({ filter, detail: filter === null ? IDLE : LOADING });
    if (filter !== null) this.loadDetail();
    this.loadFeatureVis();
  }

  /**
   * The feature visualisations the current view shows, where the layer logged them: the layer's at the
   * slider's step (grid), the selected filter's filmstrip, and both runs' in run vs run.
   */
  loadFeatureVis() {
    const { run, layer, step, mode, show, filter, compare, names } = this.state;
    if (!layer || step < 0) return;
    const on = (/** @type {string} */ r) => hasFeatureVis(names, this.layerEntry(r, layer) ?? null);
    if (!on(run)) return;
    if (mode === "filters" && show === "visualizations") {
      this.fetchInto("featureVis", "layer", JSON.stringify([run, layer, step]), () => api.fetchFeatureVis(run, layer, step));
    }
    if (filter !== null) {
      this.fetchInto("featureVis", "history", JSON.stringify([run, layer, filter]), () => api.fetchFeatureVisHistory(run, layer, filter));
    }
    if (mode === "runs" && on(compare.runB)) {
      this.fetchInto("featureVis", "runA", JSON.stringify([run, layer, step]), () => api.fetchFeatureVis(run, layer, step));
      const { runB, stepB } = compare;
      this.fetchInto("featureVis", "runB", JSON.stringify([runB, layer, stepB]), () => api.fetchFeatureVis(runB, layer, stepB));
    }
  }

  async loadDetail() {
    const { run, layer, step, filter } = this.state;
    if (filter === null) return;
    if (this.state.detail.status !== "ready" || this.state.detail.data?.filter !== filter) {
      this.set({ detail: LOADING });
    }
    const probeWanted = this.runEntry(run)?.probe && !this.state.probes[run];
    // The filter's responses and impact come from the layer-wide analyses: the detail shows once all arrived.
    const [detail, probe] = await Promise.all([
      api.fetchFilter(run, layer, step, filter).then(ready, failed),
      probeWanted ? api.fetchProbe(run).then(ready, failed) : Promise.resolve(null),
      this.loadAnalysis(),
    ]);
    if (probe) this.set({ probes: { ...this.state.probes, [run]: probe } });
    const now = this.state;
    if (now.run !== run || now.layer !== layer || now.step !== step || now.filter !== filter) return;
    this.set({ detail });
  }

  /**
   * Side by side, A is always the current run: at `stepA` against the slider's step (epochs), or at
   * the slider's step against `runB` at `stepB` (runs). Defaults: the first step; the next comparable
   * run at its last step.
   */
  resetCompare() {
    const entry = this.layerEntry();
    if (!entry) return;
    const runB = this.runBChoices()[0]?.run ?? this.state.run;
    const stepsB = this.layerEntry(runB)?.steps ?? entry.steps;
    this.set({
      compare: {
        ...this.state.compare,
        stepA: entry.steps[0],
        runB,
        stepB: stepsB[stepsB.length - 1],
        pairStep: -1,
        load: IDLE,
      },
    });
  }

  /** @param {Partial<State["compare"]>} patch */
  setCompare(patch) {
    const compare = { ...this.state.compare, ...patch };
    if (patch.runB !== undefined) {
      const steps = this.layerEntry(compare.runB)?.steps ?? [];
      if (!steps.includes(compare.stepB)) compare.stepB = steps[steps.length - 1];
    }
    this.set({ compare });
    if (patch.sort === undefined || Object.keys(patch).length > 1) this.loadCompare();
    this.loadFeatureVis();
  }

  /** The query the side-by-side view needs in the current mode. */
  compareQuery() {
    const { mode, run, layer, step, compare } = this.state;
    if (mode === "epochs") {
      return { layer, runA: run, stepA: compare.stepA, runB: run, stepB: step, align: /** @type {const} */ ("index"), pairStep: -1 };
    }
    return { layer, runA: run, stepA: step, runB: compare.runB, stepB: compare.stepB, align: compare.align, pairStep: compare.pairStep };
  }

  async loadCompare() {
    if (!this.comparing() || !this.state.layer) return;
    const query = this.compareQuery();
    const key = JSON.stringify(query);
    this.set({ compare: { ...this.state.compare, load: { ...this.state.compare.load, status: "loading" } } });
    const load = await api.fetchCompare(query).then(ready, failed);
    if (JSON.stringify(this.compareQuery()) !== key || !this.comparing()) return; // stale
    this.set({ compare: { ...this.state.compare, load } });
  }

  /**
   * One analysis of one layer at one step, fetched once and kept for the slider; a failed fetch is
   * forgotten, to be asked again next time (its failure is reported by whoever awaits it).
   * @param {Analysis} kind @param {string} run @param {string} layer @param {number} step
   */
  analysisFor(kind, run, layer, step) {
    const key = [kind, run, layer, step].join("\0");
    let entry = this.analysisCache.get(key);
    if (!entry) {
      const answer = FETCH[kind](run, layer, step);
      const fresh = { answer, data: null };
      answer.then(
        (data) => (fresh.data = data),
        () => this.analysisCache.get(key) === fresh && this.analysisCache.delete(key),
      );
      entry = fresh;
      this.analysisCache.set(key, entry);
      if (this.analysisCache.size > ANALYSIS_CACHE_SIZE) this.analysisCache.delete(this.analysisCache.keys().next().value);
    }
    return entry;
  }

  /**
   * The current layer's perturbation responses and impact table at the slider's step. An analysis
   * the run did not log is "off" (the views say how to turn it on) and is not asked for.
   */
  async loadAnalysis() {
    const { run, layer, step } = this.state;
    const kinds = this.layerEntry()?.kinds ?? [];
    // Every layer has columns (its statistics at least): the table is always asked for.
    const entries = ANALYSES.map((kind) =>
      kind === "table" || kinds.includes(kind) ? this.analysisFor(kind, run, layer, step) : null,
    );
    /** @param {Array<Load>} loads @returns {Record<Analysis, Load>} */
    const byKind = (loads) => /** @type {Record<Analysis, Load>} */ (Object.fromEntries(ANALYSES.map((kind, i) => [kind, loads[i]])));
    if (entries.some((e) => e && e.data === null)) {
      // Still arriving: the views keep what they show, dimmed.
      this.set({ analysis: byKind(entries.map((e, i) => (e ? { ...this.state.analysis[ANALYSES[i]], status: "loading" } : OFF))) });
    }
    const loads = await Promise.all(entries.map((e) => (e ? e.answer.then(ready, failed) : OFF)));
    const now = this.state;
    if (now.run !== run || now.layer !== layer || now.step !== step) return; // stale
    const analysis = byKind(loads);
    // /index says whether the run logged shape–texture responses: asking a run without them is a 404.
    if (kinds.includes("perturbation") && this.runEntry(run)?.shape_texture) this.loadShapeTexture();
    const same = ANALYSES.every((kind) => {
      const [a, b] = [analysis[kind], now.analysis[kind]];
      return a.status === b.status && a.data === b.data && a.error === b.error;
    });
    if (!same) this.set({ analysis });
  }

  /**
   * The run's shape–texture distribution over its layers at the slider's step; a run that did not
   * log it answers 404, which the Impact view leaves unsaid (the perturbation message covers it).
   */
  loadShapeTexture() {
    const { run, step } = this.state;
    const key = JSON.stringify([run, step]);
    if (this.state.shapeTexture.key === key && this.state.shapeTexture.status !== "error") return;
    this.set({ shapeTexture: { ...this.state.shapeTexture, status: "loading", key } });
    api.fetchShapeTexture(run, step).then(ready, failed).then((load) => {
      if (this.state.shapeTexture.key === key) this.set({ shapeTexture: { ...load, key } });
    });
  }

  /**
   * Fetch into `state[group][slot]` unless it already holds (or is fetching) the answer for `key`;
   * an answer that arrives after the ask changed is dropped.
   * @param {"similarity"|"embedding"|"featureVis"} group @param {string} slot @param {string} key
   * @param {() => Promise<any>} fetch
   */
  async fetchInto(group, slot, key, fetch) {
    /** @type {KeyedLoad} */
    const current = this.state[group][slot];
    if (current.key === key && current.status !== "error") return;
    this.set({ [group]: { ...this.state[group], [slot]: { ...current, status: "loading", key } } });
    const load = await fetch().then(ready, failed);
    if (this.state[group][slot].key !== key) return; // stale
    this.set({ [group]: { ...this.state[group], [slot]: { ...load, key } } });
  }

  /** The CKA views' three answers: layer × layer (A at the slider's step vs B), epoch × epoch, to final. */
  loadSimilarity() {
    const { run, layer, step, similarity } = this.state;
    if (!layer || step < 0) return;
    const runB = similarity.runB || run;
    const stepB = similarity.stepB < 0 ? step : similarity.stepB;
    this.fetchInto("similarity", "layers", JSON.stringify([run, step, runB, stepB]), () => api.fetchCkaLayers(run, step, runB, stepB));
    this.fetchInto("similarity", "epochs", JSON.stringify([run, layer]), () => api.fetchCkaEpochs(run, layer));
    this.fetchInto("similarity", "final", JSON.stringify([run]), () => api.fetchCkaFinal(run));
  }

  /** @param {{runB?: string, stepB?: number}} patch runB "": the current run; stepB -1: the slider's step */
  setSimilarity(patch) {
    this.set({ similarity: { ...this.state.similarity, ...patch } });
    this.loadSimilarity();
  }

  /** The current layer's filter map over every step (the slider picks the step shown). */
  loadEmbedding() {
    const { run, layer, embedding } = this.state;
    if (!layer) return;
    const method = embedding.method;
    this.fetchInto("embedding", "load", JSON.stringify([run, layer, method]), () => api.fetchEmbedding(run, layer, method));
  }

  /** @param {{method?: State["embedding"]["method"], color?: string, trails?: boolean}} patch */
  setEmbedding(patch) {
    this.set({ embedding: { ...this.state.embedding, ...patch } });
    this.loadEmbedding();
  }

  /** @param {string} metric a column name @param {boolean} reverse */
  setImpactSort(metric, reverse) {
    this.set({ impactSort: { metric, reverse } });
  }

  /** @param {string} group a column group @param {boolean} hidden */
  setGroupHidden(group, hidden) {
    const rest = this.state.hiddenGroups.filter((g) => g !== group);
    this.set({ hiddenGroups: hidden ? [...rest, group] : rest });
  }

  /** @param {string} name the column whose history the filter detail charts */
  setHistoryColumn(name) {
    this.set({ historyColumn: name });
  }
}
