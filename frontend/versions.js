// Which tb_convviz serves the tab and which wrote each log, in words (pure: node tests import it).

/**
 * @typedef {{run: string, format_version: number, writer: ?string}} NewerLog  a run holding records of
 *   a format newer than the serving tb_convviz reads (writer: the version that wrote them, if named)
 */

/**
 * The status line: the serving version and, for the run shown, the version that wrote it.
 * @param {string} version @param {string} run @param {?string|undefined} writer
 */
export function versionLine(version, run, writer) {
  const reader = `tb_convviz ${version}`;
  if (!run) return reader;
  const by = writer ? `tb_convviz ${writer}` : "a tb_convviz from before logs named their writer";
  return `${reader} · run ${run} written by ${by}`;
}

/**
 * Why a run's newer records are left out, and what to do about it.
 * @param {NewerLog} log @param {string} version @param {number} formatVersion
 */
export function newerLogText(log, version, formatVersion) {
  const by = log.writer ? `tb_convviz ${log.writer}` : "a newer tb_convviz";
  return (
    `Run ${log.run} was written by ${by} in log format ${log.format_version}; this tb_convviz (${version}) ` +
    `reads format ${formatVersion} and leaves those records out: upgrade tb_convviz and restart TensorBoard to see them.`
  );
}
