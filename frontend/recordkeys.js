// Names of arrays inside the /perturbation, /impact and /table answers. Every record name (the
// counterfactual and top-example prefixes, the perturbation groups, the exact-ablation flag) comes
// from the index answer's `names` (records.record_names() on the server) or its `columns`, never
// from a literal in the dashboard.

/**
 * @typedef {{kinds: string[], perturbation_groups: Record<string, string[]>, counterfactual_prefix: string,
 *   top_example_prefix: string, impact_exact: string, shape_texture_index: string, impact_significant?: string}} RecordNames
 */

/**
 * The perturbation array of counterfactual `name` (a name from the answer's `counterfactuals`):
 * its signed relative change of mean |activation|, or its map cosine, robust z or outlier flag.
 * @param {RecordNames} names @param {string} name @param {"cosine"|"z"|"flag"} [field] @returns {string}
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
 * The perturbation array of the shape–texture index in [−1, 1] (F,), as the server names it;
 * null when the server lists no shape_texture group.
 * @param {RecordNames} names @returns {?string}
 */
export function shapeTextureIndexKey(names) {
  return names.perturbation_groups.shape_texture ? names.shape_texture_index : null;
}

/**
 * Whether the perturbation answer holds `group` (a key of `names.perturbation_groups`), i.e. the
 * record logged that response.
 * @param {any} answer the /perturbation payload @param {string} group
 */
export function hasGroup(answer, group) {
  return (answer?.groups?.[group] ?? []).length > 0;
}
