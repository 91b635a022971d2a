// The version line and the newer-log notice in words (frontend/versions.js).
import assert from "node:assert/strict";
import test from "node:test";

import { newerLogText, versionLine } from "../../frontend/versions.js";

test("versionLine names the serving version and the run's writer", () => {
  assert.equal(versionLine("0.1.0", "", undefined), "tb_convviz 0.1.0");
  assert.equal(versionLine("0.2.0", "exp1", "0.1.0"), "tb_convviz 0.2.0 · run exp1 written by tb_convviz 0.1.0");
  assert.equal(versionLine("0.2.0", "old", null), "tb_convviz 0.2.0 · run old written by a tb_convviz from before logs named their writer");
});

test("newerLogText says which version wrote the log and what to do", () => {
  assert.equal(
    newerLogText({ run: "future", format_version: 2, writer: "9.0" }, "0.1.0", 1),
    "Run future was written by tb_convviz 9.0 in log format 2; this tb_convviz (0.1.0) reads format 1 and leaves " +
      "those records out: upgrade tb_convviz and restart TensorBoard to see them.",
  );
  assert.match(newerLogText({ run: "x", format_version: 3, writer: null }, "0.1.0", 1), /^Run x was written by a newer tb_convviz in log format 3;/);
});
