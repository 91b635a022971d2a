// Names of arrays inside the /perturbation, /impact and /table answers. Every record name (the
// counterfactual and top-example prefixes, the perturbation groups, the exact-ablation flag) comes
// from the index answer's `names` (records.record_names() on the server) or its `columns`, never
// from a literal in the dashboard.

/**
 * @typedef {{kinds: string[], perturbation_groups: Record<string, string[]>, counterfactual_prefix: string,
 *   top_example_prefix: string, impact_exact: string, shape_texture_index: string, impact_significant?: string,
 *   impact_p_adjusted?: string, feature_vis_kind?: string}} RecordNames
 */

/**
 * The perturbation array of counterfactual `name` (a name from the answer's `counterfactuals`):
 * its signed relative change of mean |activation|, or that change's 95% interval (F, 2), the p and
 * BH q of its paired test over probe images, its map cosine, robust z or flag.
 * @param {RecordNames} names @param {string} name @param {"ci"|"p"|"q"|"cosine"|"z"|"flag"} [field] @returns {string}
 */
export function counterfactualKey(names, name, field) {
  const key = `${names.counterfactual_prefix}${name}`;
  return field ? `${key}/${field}` : key;
}

/**
 * The impact array describing the filter's top activating probe examples.
 * @param {RecordNames} names @param {"index"|"label"|"flag"|"class"} field @returns {string}
 */
export function topExampleKey(names, field) {
  return `${names.top_example_prefix}${field}`;
}

/** The impact array saying which filters were ablated exactly (u8 0/1). @param {RecordNames} names */
export function exactKey(names) {
  return names.impact_exact;
}

/**
 * The impact column saying which exactly ablated filters' Δaccuracy is significant (0/1); null when
 * the server does not name one.
 * @param {RecordNames} names @returns {?string}
 */
export function significantKey(names) {
  return names.impact_significant ?? null;
}

/**
 * The impact column of that test's adjusted p-value; null when the server does not name one.
 * @param {RecordNames} names @returns {?string}
 */
export function adjustedPKey(names) {
  return names.impact_p_adjusted ?? null;
}

/**
 * The perturbation array of the shape–texture index in [−1, 1] (F,), as the server names it;
 * null when the server lists no shape_texture group.
 * @param {RecordNames} names @returns {?string}
 */
export function shapeTextureIndexKey(names) {
  return names.perturbation_groups.shape_texture ? names.shape_texture_index : null;
}

/**
 * @typedef {{angles?: string, tuning?: string, osi?: string, preferred?: string, frequency?: string,
 *   rotation?: string, sigmas?: string, stability?: string, stabilityCi?: string, epsilon?: string, fgsm?: string,
 *   pgd?: string, fgsmCi?: string, pgdCi?: string,
 *   fractions?: string, shift?: string, reversal?: string}} PerturbationKeys
 *   the arrays the filter detail's response charts read: grating angles (also the rotation
 *   angles), tuning curve (F, A), orientation selectivity, preferred orientation and grating
 *   frequency (F,), rotated-probe response (F, A); noise levels and stability (F, S) with the 95%
 *   interval of its mean over levels (F, 2); attack ε and FGSM/PGD change (F,) with intervals (F, 2); shift fractions and shift cosines (F, X); reversal cosine (F,)
 */

/**
 * The perturbation arrays the response charts read, by their place in the groups the index answer
 * lists (format.PERTURBATION_GROUPS declares each group's arrays in this order: its layer-wide axis
 * first, then its per-filter arrays). Absent groups give undefined names, which no answer holds.
 * @param {RecordNames} names @returns {PerturbationKeys}
 */
export function perturbationKeys(names) {
  const g = names.perturbation_groups;
  const [angles, tuning, osi, preferred, frequency] = g.orientation ?? [];
  const [, rotation] = g.rotation ?? [];
  const [sigmas, stability, stabilityCi] = g.noise ?? [];
  const [epsilon, fgsm, pgd, fgsmCi, pgdCi] = g.adversarial ?? [];
  const [fractions, shift] = g.shift ?? [];
  const [reversal] = g.reversal ?? [];
  return { angles, tuning, osi, preferred, frequency, rotation, sigmas, stability, stabilityCi, epsilon, fgsm, pgd, fgsmCi, pgdCi, fractions, shift, reversal };
}

/**
 * The perturbation groups the answer holds keys of (the record logged that response), as
 * {group: true}.
 * @param {any} answer the /perturbation payload @returns {Record<string, boolean>}
 */
export function loggedGroups(answer) {
  return Object.fromEntries(Object.entries(answer?.groups ?? {}).map(([group, keys]) => [group, keys.length > 0]));
}

/**
 * The drift columns of the per-filter statistics, from the run's declared columns: the group that
 * holds them ("drift") declares the cosine distance to the previous log, the norm change since it,
 * then the cosine distance to the first log (schema.py), in this order. Null for a column absent.
 * @param {import("./columns.js").Column[]} columns
 * @returns {{previous: ?string, normPrevious: ?string, first: ?string}}
 */
export function driftKeys(columns) {
  const drift = columns.filter((c) => c.group === "drift");
  const distances = drift.filter((c) => c.format !== "percent");
  const norm = drift.find((c) => c.format === "percent");
  return {
    previous: distances.length > 1 ? distances[0].name : null,
    normPrevious: norm?.name ?? null,
    first: distances.length ? distances[distances.length - 1].name : null,
  };
}

/**
 * Whether a layer's records include feature visualisations (ConvViz(feature_vis=...)).
 * @param {RecordNames} names @param {?{kinds: string[]}} entry the layer's /index entry
 */
export function hasFeatureVis(names, entry) {
  return Boolean(names.feature_vis_kind && entry?.kinds.includes(names.feature_vis_kind));
}
